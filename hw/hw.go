package hw

import (
	"fmt"
	"sort"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// Filesystem kinds a partition can carry in the image.
const (
	FSVFAT = "vfat"
	FSExt4 = "ext4"
	// FSNone marks a partition left empty in the image (slot B, or a data partition whose
	// filesystem is made on the device at first boot).
	FSNone = ""
)

// Role says what a partition is for.
type Role string

// The partition roles of an A/B image.
const (
	RoleConfig  Role = "config"   // first FAT partition: slot switch and per-device settings
	RoleBootA   Role = "boot-a"   // slot A's firmware, kernel, config.txt and cmdline.txt
	RoleBootB   Role = "boot-b"   // slot B's
	RoleSystemA Role = "system-a" // slot A's read-only root filesystem
	RoleSystemB Role = "system-b" // slot B's
	RoleData    Role = "data"     // everything that lives across updates, mounted at /var
)

// Partition is one partition of a board's layout.
type Partition struct {
	Number int    // the kernel's partition number (1–4 primary, 5+ logical on MBR)
	Role   Role   // what it is for
	Label  string // filesystem label
	Type   byte   // MBR partition type code
	Size   int64  // bytes
	FS     string // FSVFAT, FSExt4 or FSNone
}

// Sizes are the user-adjustable partition sizes (spec `layout:`).
type Sizes struct {
	Boot, System, DataMin int64
}

// Download names a file by URL, pinned by its sha256.
type Download struct {
	URL    string
	SHA256 string
}

// Slot names the partitions of one A/B slot.
type Slot struct {
	Name   string // "a" or "b"
	Boot   int    // partition number of its boot partition
	System int    // partition number of its system partition
}

// BootInput is what a board needs to make a slot's boot partition.
type BootInput struct {
	Base      *tree.Tree // the base image's boot partition
	Slot      Slot
	RootUUID  string // PARTUUID of the slot's system partition
	Epoch     time.Time
	ExtraArgs []string // extra kernel arguments the builder wants
}

// Board is a device family edgeimg builds for.
type Board interface {
	// Name is the board's name in the spec and on the command line ("rpi4").
	Name() string
	// Arch is the GOARCH of its userland ("arm64").
	Arch() string
	// DefaultSizes are the layout sizes when the spec sets none.
	DefaultSizes() Sizes
	// DefaultBase is the base OS image used when the spec names none.
	DefaultBase() Download
	// LayoutVersion changes whenever Layout would place partitions differently for the same
	// sizes; updates check it, since they never rewrite the partition table.
	LayoutVersion() int
	// Alignment of every partition start, in bytes.
	Alignment() int64
	// Layout returns the partitions in order, for the given sizes.
	Layout(Sizes) ([]Partition, error)
	// Slots returns slot A and slot B.
	Slots() [2]Slot
	// ConfigFiles returns the content of the config partition (the A/B switch).
	ConfigFiles(epoch time.Time) (*tree.Tree, error)
	// BootFiles returns the content of a slot's boot partition, made from the base's.
	BootFiles(BootInput) (*tree.Tree, error)
}

var boards = map[string]func() Board{}

// Register makes a board available by name; boards call it from init.
func Register(name string, f func() Board) { boards[name] = f }

// Lookup returns the named board.
func Lookup(name string) (Board, error) {
	f, ok := boards[name]
	if !ok {
		return nil, fmt.Errorf("unknown board %q (known: %v)", name, Names())
	}
	return f(), nil
}

// Names lists the known boards, sorted.
func Names() []string {
	var n []string
	for k := range boards {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// ByRole finds the partition with the given role.
func ByRole(parts []Partition, r Role) (Partition, bool) {
	for _, p := range parts {
		if p.Role == r {
			return p, true
		}
	}
	return Partition{}, false
}
