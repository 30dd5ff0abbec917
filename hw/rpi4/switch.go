package rpi4

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/edgeimg/edgeimg/hw"
)

// DefaultBootloaderDir is where the Pi firmware tells Linux how it booted.
const DefaultBootloaderDir = "/proc/device-tree/chosen/bootloader"

// SectorFile is where autoboot.txt's AutobootSize bytes live: the file on the mounted config
// partition, or (in tests) its sector inside a disk image.
type SectorFile interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes written bytes durable (fdatasync).
	Sync() error
	Close() error
}

// Switch is the Raspberry Pi 4 slot switch (hw.SlotSwitch): the firmware's tryboot_a_b with
// autoboot.txt on the config partition.
//
// The commit rewrites autoboot.txt in place: one AutobootSize write at offset 0 and fdatasync,
// never a new file and a rename (a rename on FAT is not atomic; a lost autoboot.txt sends the
// firmware to the wrong partition). The file's size and clusters never change, so the FAT and
// directory stay as they were (apart from the entry's mtime, whose old and new sectors are both
// valid). The old and new contents differ only in the two boot_partition digits, so whatever
// mix of old and new bytes a torn write leaves, the firmware's default is the old or the new slot.
type Switch struct {
	// OpenAutoboot opens autoboot.txt for reading and writing in place.
	OpenAutoboot func() (SectorFile, error)
	// Bootloader is the directory holding the firmware's partition and tryboot cells
	// (DefaultBootloaderDir).
	Bootloader string
	// Run runs a command (the reboot); it must not return on success on a real device.
	Run func(ctx context.Context, name string, args ...string) error
}

var _ hw.SlotSwitch = (*Switch)(nil)

// NewSwitch returns the switch of a running Pi: autoboot.txt at autobootPath (on the mounted
// config partition), the firmware's cells in DefaultBootloaderDir, and run for the reboot.
func NewSwitch(autobootPath string, run func(ctx context.Context, name string, args ...string) error) *Switch {
	return &Switch{
		OpenAutoboot: func() (SectorFile, error) { return openAutobootFile(autobootPath) },
		Bootloader:   DefaultBootloaderDir,
		Run:          run,
	}
}

func openAutobootFile(p string) (SectorFile, error) {
	f, err := os.OpenFile(p, os.O_RDWR, 0) // never O_TRUNC or O_CREATE: the file is rewritten in place
	if err != nil {
		return nil, fmt.Errorf("autoboot.txt: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("autoboot.txt: %w", err)
	}
	if st.Size() != AutobootSize {
		f.Close()
		return nil, fmt.Errorf("%s is %d bytes, not %d: not an edgeimg autoboot.txt", p, st.Size(), AutobootSize)
	}
	return dataSyncFile{f}, nil
}

type dataSyncFile struct{ *os.File }

func (f dataSyncFile) Sync() error { return fdatasync(f.File) }

func (s *Switch) slots() [2]hw.Slot { return (&Board{}).Slots() }

// cell reads a device-tree cell of the bootloader node: a 32-bit big-endian number.
func (s *Switch) cell(name string) (uint32, error) {
	p := filepath.Join(s.Bootloader, name)
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("bootloader %s: %w", name, err)
	}
	if len(b) != 4 {
		return 0, fmt.Errorf("%s: %d bytes, not a 32-bit device-tree cell", p, len(b))
	}
	return binary.BigEndian.Uint32(b), nil
}

// Active implements hw.SlotSwitch: the slot whose boot partition the firmware booted.
func (s *Switch) Active() (hw.Slot, error) {
	n, err := s.cell("partition")
	if err != nil {
		return hw.Slot{}, err
	}
	sl, ok := hw.SlotByBoot(s.slots(), int(n))
	if !ok {
		return hw.Slot{}, fmt.Errorf("booted from partition %d, which is neither slot's boot partition", n)
	}
	return sl, nil
}

// Inactive implements hw.SlotSwitch.
func (s *Switch) Inactive() (hw.Slot, error) {
	a, err := s.Active()
	if err != nil {
		return hw.Slot{}, err
	}
	return hw.OtherSlot(s.slots(), a), nil
}

// IsTrial implements hw.SlotSwitch: the firmware booted with its tryboot flag (the
// bootloader's tryboot cell) and autoboot.txt's default is not the booted slot yet.
func (s *Switch) IsTrial() (bool, error) {
	n, err := s.cell("tryboot")
	if err != nil || n != 1 {
		return false, err
	}
	active, err := s.Active()
	if err != nil {
		return false, err
	}
	def, _, err := s.Read()
	if err != nil {
		return false, err
	}
	return def != active.Boot, nil
}

// Read returns autoboot.txt's default and trial boot partitions.
func (s *Switch) Read() (def, try int, err error) {
	f, err := s.OpenAutoboot()
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	return readAutoboot(f)
}

func readAutoboot(f SectorFile) (def, try int, err error) {
	b := make([]byte, AutobootSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return 0, 0, fmt.Errorf("reading autoboot.txt: %w", err)
	}
	def, try, ok := ParseAutoboot(b)
	if !ok {
		return 0, 0, errors.New("autoboot.txt sets no tryboot_a_b boot partitions")
	}
	return def, try, nil
}

// write sets autoboot.txt to boot def, trying try, if it does not already.
func (s *Switch) write(def, try int) error {
	f, err := s.OpenAutoboot()
	if err != nil {
		return err
	}
	defer f.Close()
	d, t, err := readAutoboot(f)
	if err != nil {
		return err
	}
	if d == def && t == try {
		return nil
	}
	if _, err := f.WriteAt(Autoboot(def, try), 0); err != nil {
		return fmt.Errorf("writing autoboot.txt: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing autoboot.txt: %w", err)
	}
	return nil
}

// SetTrial implements hw.SlotSwitch: autoboot.txt's [tryboot] boot_partition becomes the
// slot's boot partition, the default unchanged. With two slots it already is, so nothing is
// written; the slot can never be the default this way.
func (s *Switch) SetTrial(slot hw.Slot) error {
	def, _, err := s.Read()
	if err != nil {
		return err
	}
	if def == slot.Boot {
		return fmt.Errorf("slot %s is already the default slot", slot.Name)
	}
	return s.write(def, slot.Boot)
}

// TryReboot implements hw.SlotSwitch: `reboot "0 tryboot"`, which sets the firmware's one-shot
// tryboot flag.
func (s *Switch) TryReboot(ctx context.Context) error {
	if s.Run == nil {
		return errors.New("no command runner for the reboot")
	}
	return s.Run(ctx, "reboot", "0 tryboot")
}

// Commit implements hw.SlotSwitch: autoboot.txt's default becomes slot, the trial the other.
func (s *Switch) Commit(slot hw.Slot) error {
	return s.write(slot.Boot, hw.OtherSlot(s.slots(), slot).Boot)
}
