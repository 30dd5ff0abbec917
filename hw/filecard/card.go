package filecard

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/edgeimg/edgeimg/hw"
	"github.com/edgeimg/edgeimg/hw/rpi4"
)

// Extent is where a partition lies in the image, in bytes.
type Extent struct{ Start, Size int64 }

// Card is a simulated SD card in a Raspberry Pi 4.
type Card struct {
	// Image is the disk image file.
	Image string
	// Parts are the partitions by number.
	Parts map[int]Extent
	// Dir holds the simulated device tree (Dir/bootloader) and the firmware's one-shot
	// tryboot flag.
	Dir string
	// AutobootOffset is the byte offset of autoboot.txt's sector in the image.
	AutobootOffset int64
	// WrapAutoboot, when set, wraps every open of autoboot.txt (tests use it to cut power).
	WrapAutoboot func(rpi4.SectorFile) rpi4.SectorFile
}

// autobootMarker is in every autoboot.txt edgeimg writes (rpi4.Autoboot).
var autobootMarker = []byte("# edgeimg: A/B slot switch")

// New opens the card image, finds autoboot.txt in partition 1 (the sector-aligned 512 bytes
// that parse as an edgeimg autoboot.txt) and powers it on.
func New(image string, parts map[int]Extent, dir string) (*Card, error) {
	c := &Card{Image: image, Parts: parts, Dir: dir}
	p1, ok := parts[1]
	if !ok {
		return nil, errors.New("no partition 1 (config)")
	}
	f, err := os.Open(image)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	found := int64(-1)
	for off := int64(0); off < p1.Size; off += int64(len(buf)) {
		n, err := f.ReadAt(buf, p1.Start+off)
		if err != nil && err != io.EOF {
			return nil, err
		}
		for s := 0; s+rpi4.AutobootSize <= n; s += 512 {
			sec := buf[s : s+rpi4.AutobootSize]
			if sec[0] != '[' || !bytes.Contains(sec, autobootMarker) {
				continue
			}
			if _, _, ok := rpi4.ParseAutoboot(sec); ok {
				if found >= 0 {
					return nil, errors.New("two autoboot.txt sectors in partition 1")
				}
				found = p1.Start + off + int64(s)
			}
		}
	}
	if found < 0 {
		return nil, errors.New("no autoboot.txt in partition 1")
	}
	c.AutobootOffset = found
	if err := os.MkdirAll(filepath.Join(dir, "bootloader"), 0o755); err != nil {
		return nil, err
	}
	if _, err := c.PowerOn(); err != nil {
		return nil, err
	}
	return c, nil
}

// Switch returns the rpi4 slot switch of the card, as the agent on it would use it.
func (c *Card) Switch() *rpi4.Switch {
	return &rpi4.Switch{
		OpenAutoboot: c.openAutoboot,
		Bootloader:   filepath.Join(c.Dir, "bootloader"),
		Run:          c.run,
	}
}

func (c *Card) openAutoboot() (rpi4.SectorFile, error) {
	f, err := os.OpenFile(c.Image, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	var s rpi4.SectorFile = &sector{f: f, off: c.AutobootOffset}
	if c.WrapAutoboot != nil {
		s = c.WrapAutoboot(s)
	}
	return s, nil
}

// sector is autoboot.txt's 512 bytes inside the image file.
type sector struct {
	f   *os.File
	off int64
}

func (s *sector) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > rpi4.AutobootSize {
		return 0, fmt.Errorf("autoboot.txt: read of %d bytes at %d outside its %d bytes", len(b), off, rpi4.AutobootSize)
	}
	return s.f.ReadAt(b, s.off+off)
}

func (s *sector) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > rpi4.AutobootSize {
		return 0, fmt.Errorf("autoboot.txt: write of %d bytes at %d would change its size", len(b), off)
	}
	return s.f.WriteAt(b, s.off+off)
}

func (s *sector) Sync() error  { return s.f.Sync() }
func (s *sector) Close() error { return s.f.Close() }

// run handles the commands the switch runs: `reboot "0 tryboot"` sets the one-shot flag
// (the device then has to be powered on again).
func (c *Card) run(_ context.Context, name string, args ...string) error {
	if name == "reboot" && len(args) == 1 && args[0] == "0 tryboot" {
		return os.WriteFile(filepath.Join(c.Dir, "tryboot-flag"), nil, 0o644)
	}
	return fmt.Errorf("filecard: unexpected command %s %q", name, args)
}

// Autoboot returns autoboot.txt's current bytes.
func (c *Card) Autoboot() ([]byte, error) {
	f, err := os.Open(c.Image)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, rpi4.AutobootSize)
	_, err = f.ReadAt(b, c.AutobootOffset)
	return b, err
}

// ErrNoBoot is returned by PowerOn when the firmware finds nothing to boot.
var ErrNoBoot = errors.New("firmware: nothing bootable")

// PowerOn simulates a (re)boot: the firmware reads autoboot.txt, consumes the one-shot tryboot
// flag, picks the boot partition as the Pi 4 firmware does (rpi4.FirmwareBoot), and tells the
// booted system which partition it came from and whether it is a trial (the device-tree cells).
// It fails with ErrNoBoot when autoboot.txt selects no slot or the slot's boot partition has no
// valid FAT boot sector.
func (c *Card) PowerOn() (hw.Slot, error) {
	ab, err := c.Autoboot()
	if err != nil {
		return hw.Slot{}, err
	}
	flag := filepath.Join(c.Dir, "tryboot-flag")
	_, err = os.Stat(flag)
	try := err == nil
	if try {
		if err := os.Remove(flag); err != nil {
			return hw.Slot{}, err
		}
	}
	n, ok := rpi4.FirmwareBoot(ab, try)
	if !ok {
		return hw.Slot{}, fmt.Errorf("%w: autoboot.txt selects no boot partition", ErrNoBoot)
	}
	slot, ok := hw.SlotByBoot((&rpi4.Board{}).Slots(), n)
	if !ok {
		return hw.Slot{}, fmt.Errorf("%w: autoboot.txt selects partition %d, not a slot", ErrNoBoot, n)
	}
	if !c.Bootable(slot) {
		return hw.Slot{}, fmt.Errorf("%w: slot %s's boot partition %d has no FAT boot sector", ErrNoBoot, slot.Name, n)
	}
	for name, v := range map[string]int{"partition": n, "tryboot": map[bool]int{false: 0, true: 1}[try]} {
		var cell [4]byte
		binary.BigEndian.PutUint32(cell[:], uint32(v))
		if err := os.WriteFile(filepath.Join(c.Dir, "bootloader", name), cell[:], 0o644); err != nil {
			return hw.Slot{}, err
		}
	}
	return slot, nil
}

// Bootable reports whether the slot's boot partition starts with a FAT boot sector (the
// firmware cannot load anything else).
func (c *Card) Bootable(s hw.Slot) bool {
	e, ok := c.Parts[s.Boot]
	if !ok {
		return false
	}
	f, err := os.Open(c.Image)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 512)
	if _, err := f.ReadAt(b, e.Start); err != nil {
		return false
	}
	return b[510] == 0x55 && b[511] == 0xaa && (bytes.Contains(b[:90], []byte("FAT")))
}

// Partition opens partition n for reading and writing.
func (c *Card) Partition(n int) (*Partition, error) {
	e, ok := c.Parts[n]
	if !ok {
		return nil, fmt.Errorf("no partition %d", n)
	}
	f, err := os.OpenFile(c.Image, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &Partition{f: f, e: e, n: n}, nil
}

// Partition is one partition of the card's image, bounded to its extent.
type Partition struct {
	f *os.File
	e Extent
	n int
}

// Size returns the partition's size in bytes.
func (p *Partition) Size() int64 { return p.e.Size }

// ReadAt reads within the partition.
func (p *Partition) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > p.e.Size {
		return 0, fmt.Errorf("partition %d: read beyond its end", p.n)
	}
	return p.f.ReadAt(b, p.e.Start+off)
}

// WriteAt writes within the partition.
func (p *Partition) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > p.e.Size {
		return 0, fmt.Errorf("partition %d: write beyond its end", p.n)
	}
	return p.f.WriteAt(b, p.e.Start+off)
}

// Sync flushes the image file.
func (p *Partition) Sync() error { return p.f.Sync() }

// Close closes the partition.
func (p *Partition) Close() error { return p.f.Close() }
