package rpi4

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/hw"
)

const (
	// MiB and GiB in bytes.
	MiB = int64(1) << 20
	GiB = int64(1) << 30

	// ConfigSize is the size of p1, the config partition holding autoboot.txt. It is FAT32 so
	// the same writer serves every FAT partition; 64 MiB is above FAT32's minimum cluster count.
	ConfigSize = 64 * MiB

	// layoutVersion is bumped whenever partitions would move for the same sizes.
	layoutVersion = 1

	typeFAT32LBA = 0x0c
	typeLinux    = 0x83

	// SystemLabel is the ext4 label of both system slots: one filesystem boots from either
	// slot, so nothing in it (its label included) may name the slot.
	SystemLabel = "edgeimg-sys"
	// DataLabel is the ext4 label the data partition gets when the device makes it.
	DataLabel = "edgeimg-data"
)

// DefaultBase is Raspberry Pi OS Lite (64-bit), bookworm, 2025-05-13: the last bookworm
// release, pinned by the sha256 published beside it.
var DefaultBase = hw.Download{
	URL:    "https://downloads.raspberrypi.com/raspios_lite_arm64/images/raspios_lite_arm64-2025-05-13/2025-05-13-raspios-bookworm-arm64-lite.img.xz",
	SHA256: "62d025b9bc7ca0e1facfec74ae56ac13978b6745c58177f081d39fbb8041ed45",
}

// Board is the Raspberry Pi 4 (and 400, CM4).
type Board struct{}

var _ hw.Board = (*Board)(nil)

func init() { hw.Register("rpi4", func() hw.Board { return &Board{} }) }

// Name implements hw.Board.
func (*Board) Name() string { return "rpi4" }

// Arch implements hw.Board.
func (*Board) Arch() string { return "arm64" }

// DefaultSizes implements hw.Board: 256 MiB boot partitions (a bookworm kernel, initramfs,
// firmware and DTBs take ~75 MiB), 2 GiB system slots, and a data partition of at least 1 GiB.
func (*Board) DefaultSizes() hw.Sizes {
	return hw.Sizes{Boot: 256 * MiB, System: 2 * GiB, DataMin: 1 * GiB}
}

// DefaultBase implements hw.Board.
func (*Board) DefaultBase() hw.Download { return DefaultBase }

// LayoutVersion implements hw.Board.
func (*Board) LayoutVersion() int { return layoutVersion }

// Alignment implements hw.Board: 4 MiB, the erase-block size SD cards are optimised for and
// the alignment Raspberry Pi OS uses.
func (*Board) Alignment() int64 { return 4 * MiB }

// Layout implements hw.Board. The table is MBR: the Pi 4 EEPROM's autoboot.txt numbers
// partitions as MBR does (1–4 primary, 5+ logical), and GPT with autoboot.txt is reported to
// hang some EEPROM releases. Five partitions do not fit in four primary entries, so the system
// slots and the data partition are logical partitions inside an extended partition 4:
//
//	p1 config (FAT32)  p2 boot A (FAT32)  p3 boot B (FAT32)  p4 extended
//	p5 system A (ext4, read-only)  p6 system B  p7 data (made and grown on first boot)
func (b *Board) Layout(s hw.Sizes) ([]hw.Partition, error) {
	for _, c := range []struct {
		name string
		v    int64
	}{{"layout.bootSize", s.Boot}, {"layout.systemSize", s.System}, {"layout.dataMinSize", s.DataMin}} {
		if c.v <= 0 || c.v%b.Alignment() != 0 {
			return nil, fmt.Errorf("%s: %d bytes is not a positive multiple of %d MiB", c.name, c.v, b.Alignment()/MiB)
		}
	}
	return []hw.Partition{
		{Number: 1, Role: hw.RoleConfig, Label: "EDGECONFIG", Type: typeFAT32LBA, Size: ConfigSize, FS: hw.FSVFAT},
		{Number: 2, Role: hw.RoleBootA, Label: "BOOT-A", Type: typeFAT32LBA, Size: s.Boot, FS: hw.FSVFAT},
		{Number: 3, Role: hw.RoleBootB, Label: "BOOT-B", Type: typeFAT32LBA, Size: s.Boot, FS: hw.FSVFAT},
		{Number: 5, Role: hw.RoleSystemA, Label: SystemLabel, Type: typeLinux, Size: s.System, FS: hw.FSExt4},
		{Number: 6, Role: hw.RoleSystemB, Label: SystemLabel, Type: typeLinux, Size: s.System, FS: hw.FSNone},
		{Number: 7, Role: hw.RoleData, Label: DataLabel, Type: typeLinux, Size: s.DataMin, FS: hw.FSNone},
	}, nil
}

// Slots implements hw.Board.
func (*Board) Slots() [2]hw.Slot {
	return [2]hw.Slot{{Name: "a", Boot: 2, System: 5}, {Name: "b", Boot: 3, System: 6}}
}

// AutobootSize is the fixed size of autoboot.txt. The device commits an update by rewriting
// the file in place within one sector (a rename on FAT is not atomic), so it never changes size.
const AutobootSize = 512

// Autoboot returns autoboot.txt selecting boot partition def, with the firmware's one-shot
// tryboot going to try, padded to AutobootSize with a comment.
func Autoboot(def, try int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "[all]\ntryboot_a_b=1\nboot_partition=%d\n[tryboot]\nboot_partition=%d\n", def, try)
	b.WriteString("[all]\n# edgeimg: A/B slot switch. Fixed size, rewritten in place by the device.\n#")
	for b.Len() < AutobootSize-1 {
		b.WriteByte(' ')
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// ConfigFiles implements hw.Board: autoboot.txt booting slot A, trying slot B.
func (b *Board) ConfigFiles(epoch time.Time) (*tree.Tree, error) {
	t := tree.New()
	s := b.Slots()
	if err := t.WriteFile("autoboot.txt", Autoboot(s[0].Boot, s[1].Boot), 0o644, epoch); err != nil {
		return nil, err
	}
	return t, nil
}

// dropped are boot files of the base that must not reach the image: Raspberry Pi OS and
// Imager first-boot customisation, which the builder replaces with the spec.
var dropped = map[string]bool{
	"firstrun.sh":         true,
	"userconf.txt":        true,
	"userconf":            true,
	"ssh":                 true,
	"ssh.txt":             true,
	"wpa_supplicant.conf": true,
	"custom.toml":         true,
	"autoboot.txt":        true,
	"tryboot.txt":         true,
}

// BootFiles implements hw.Board: the base's firmware, kernel, initramfs, DTBs and overlays,
// with config.txt and cmdline.txt rewritten for the slot.
func (b *Board) BootFiles(in hw.BootInput) (*tree.Tree, error) {
	for _, f := range []string{"start4.elf", "fixup4.dat", "config.txt", "cmdline.txt"} {
		if in.Base.Get(f) == nil {
			return nil, fmt.Errorf("base boot partition has no %s: not a Raspberry Pi 4 boot partition", f)
		}
	}
	cfg, err := in.Base.ReadFile("config.txt")
	if err != nil {
		return nil, err
	}
	cmd, err := in.Base.ReadFile("cmdline.txt")
	if err != nil {
		return nil, err
	}
	out := tree.New()
	err = in.Base.Walk(func(e *tree.Entry) error {
		if dropped[strings.ToLower(e.Path)] || e.Path == "config.txt" || e.Path == "cmdline.txt" {
			return nil
		}
		c := *e
		c.ModTime = in.Epoch
		c.UID, c.GID = 0, 0
		return out.Put(&c)
	})
	if err != nil {
		return nil, err
	}
	if err := out.WriteFile("config.txt", ConfigTxt(cfg), 0o644, in.Epoch); err != nil {
		return nil, err
	}
	line := CmdLine(string(cmd), in.RootUUID, in.ExtraArgs)
	if err := out.WriteFile("cmdline.txt", []byte(line+"\n"), 0o644, in.Epoch); err != nil {
		return nil, err
	}
	return out, nil
}

// ConfigTxt returns the base's config.txt with what edgeimg needs appended in a final [all]
// section: 64-bit kernel and the hardware watchdog (a hang must become a reboot, which the
// firmware's trial boot turns into a fallback). Earlier watchdog settings are removed.
func ConfigTxt(base []byte) []byte {
	text := strings.TrimRight(strings.TrimSuffix(string(base), configBlock), "\n")
	var b bytes.Buffer
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "dtparam=watchdog") {
			continue
		}
		b.WriteString(strings.TrimRight(l, "\r") + "\n")
	}
	b.WriteString(configBlock)
	return b.Bytes()
}

const configBlock = "\n[all]\n# edgeimg: 64-bit kernel and the hardware watchdog\narm_64bit=1\ndtparam=watchdog=on\n"

// droppedArgs are kernel arguments of the base that edgeimg replaces or must not keep:
// the root device (the slot names its own), Raspberry Pi OS's first-boot resizer (init=),
// Imager's customisation hooks, fsck repair (a slot is never written), and read-write root.
var droppedArgs = map[string]bool{
	"root": true, "rootfstype": true, "rootwait": true, "rootflags": true, "ro": true, "rw": true,
	"init": true, "fsck.repair": true, "fsck.mode": true, "resize": true, "panic": true,
	"systemd.run": true, "systemd.run_success_action": true, "systemd.run_failure_action": true,
	"cgroup_memory": true,
}

// CmdLine rewrites a base cmdline.txt for a slot whose root is PARTUUID rootUUID.
func CmdLine(base, rootUUID string, extra []string) string {
	var args []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			args = append(args, a)
		}
	}
	extras := map[string]bool{}
	for _, a := range extra {
		extras[a] = true
	}
	for _, a := range strings.Fields(base) {
		k, v, _ := strings.Cut(a, "=")
		if droppedArgs[k] || (k == "cgroup_enable" && v == "memory") || extras[a] {
			continue
		}
		add(a)
	}
	for _, a := range []string{
		"root=PARTUUID=" + rootUUID, "rootfstype=ext4", "ro", "rootwait",
		"cgroup_memory=1", "cgroup_enable=memory", "panic=10",
	} {
		add(a)
	}
	for _, a := range extra {
		add(a)
	}
	return strings.Join(args, " ")
}
