package basegen

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// DefaultEpoch is the time stamped on every file when Options.Epoch is zero: the release date
// of the Raspberry Pi OS bookworm image the generated base imitates.
var DefaultEpoch = time.Date(2024, 11, 19, 0, 0, 0, 0, time.UTC)

// Layout constants of the generated disk, the same as Raspberry Pi OS images.
const (
	// BootStartSector is the first 512-byte sector of partition 1 (4 MiB).
	BootStartSector = 8192
	// DefaultBootSize is the size of the FAT32 boot partition unless Options.Small is set.
	DefaultBootSize = 512 << 20
	// SmallBootSize is the default boot partition size when Options.Small is set.
	SmallBootSize = 64 << 20

	minBootSize = 36 << 20 // FAT32 needs 65525 clusters
	minRootSize = 16 << 20
	mib         = 1 << 20
	align       = 4 * mib
)

// Options control what Generate builds. The zero value is a full-size base with no benchmark
// payload, seed 0 and DefaultEpoch.
type Options struct {
	// Seed selects the pseudo-random content and the identifiers (disk signature, filesystem
	// UUIDs): the same seed gives the same image. Default 0.
	Seed int64
	// ExtraFiles is the number of benchmark files spread over about ExtraFiles/13 directories
	// under /usr/share/bench and /usr/lib/bench. Default 0.
	ExtraFiles int
	// ExtraBytes is the total size of the benchmark files: mostly small files, with some of
	// 1–4 MiB holding most of the bytes. Needs ExtraFiles > 0. Default 0.
	ExtraBytes int64
	// RootSize is the size of the ext4 root partition in bytes, rounded up to a MiB. Default:
	// the content plus 30 % plus room for the journal and metadata.
	RootSize int64
	// BootSize is the size of the FAT32 boot partition in bytes, rounded up to a MiB. Default
	// DefaultBootSize, or SmallBootSize when Small is set.
	BootSize int64
	// Epoch is the modification time of every file and the creation time of the
	// filesystems. Default DefaultEpoch; it must not be before 1980 (FAT cannot store that).
	Epoch time.Time
	// Small makes the firmware, kernel and initramfs placeholders tens to hundreds of KiB
	// instead of their real sizes, and the boot partition SmallBootSize, for tests.
	Small bool
}

// withDefaults returns o with every unset field given its default; validate must pass first.
func (o Options) withDefaults() Options {
	if o.Epoch.IsZero() {
		o.Epoch = DefaultEpoch
	}
	o.Epoch = o.Epoch.UTC().Truncate(2 * time.Second) // FAT stores even seconds
	if o.BootSize == 0 {
		o.BootSize = DefaultBootSize
		if o.Small {
			o.BootSize = SmallBootSize
		}
	}
	o.BootSize = roundUp(o.BootSize, mib)
	o.RootSize = roundUp(o.RootSize, mib)
	return o
}

// validate rejects options that cannot make an image, naming the field.
func (o Options) validate() error {
	switch {
	case o.ExtraFiles < 0:
		return fmt.Errorf("options: ExtraFiles %d is negative", o.ExtraFiles)
	case o.ExtraBytes < 0:
		return fmt.Errorf("options: ExtraBytes %d is negative", o.ExtraBytes)
	case o.ExtraBytes > 0 && o.ExtraFiles == 0:
		return fmt.Errorf("options: ExtraBytes %d needs ExtraFiles > 0", o.ExtraBytes)
	case o.RootSize < 0:
		return fmt.Errorf("options: RootSize %d is negative", o.RootSize)
	case o.RootSize > 0 && o.RootSize < minRootSize:
		return fmt.Errorf("options: RootSize %d is below the minimum %d", o.RootSize, minRootSize)
	case o.BootSize < 0:
		return fmt.Errorf("options: BootSize %d is negative", o.BootSize)
	case o.BootSize > 0 && o.BootSize < minBootSize:
		return fmt.Errorf("options: BootSize %d is below the FAT32 minimum %d", o.BootSize, minBootSize)
	case !o.Epoch.IsZero() && o.Epoch.Before(time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)):
		return fmt.Errorf("options: Epoch %s is before 1980", o.Epoch.Format(time.RFC3339))
	case !o.Epoch.IsZero() && o.Epoch.After(time.Date(2106, 1, 1, 0, 0, 0, 0, time.UTC)):
		return errors.New("options: Epoch is after 2106")
	}
	return nil
}

// ids are the identifiers derived from the seed: never random, so images are reproducible.
type ids struct {
	diskID   uint32 // MBR disk signature; PARTUUIDs are %08x-01 and %08x-02
	rootUUID string
	hashSeed string
	vfatID   uint32
}

func deriveIDs(seed int64) ids {
	h := func(what string) [32]byte {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(seed))
		return sha256.Sum256(append([]byte("edgeimg basegen "+what+" "), b[:]...))
	}
	d := h("disk")
	v := h("vfat")
	id := ids{
		diskID:   binary.BigEndian.Uint32(d[:4]),
		vfatID:   binary.BigEndian.Uint32(v[:4]),
		rootUUID: uuidString(h("rootfs uuid")),
		hashSeed: uuidString(h("rootfs hash seed")),
	}
	if id.diskID == 0 {
		id.diskID = 1 // 0 means "no signature" to many tools
	}
	return id
}

// DiskID returns the MBR disk signature Generate writes for seed; the partitions' PARTUUIDs
// are fmt.Sprintf("%08x-01", id) (boot) and "%08x-02" (root).
func DiskID(seed int64) uint32 { return deriveIDs(seed).diskID }

// uuidString formats the first 16 bytes of b as a version 4, variant 1 UUID.
func uuidString(b [32]byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }
