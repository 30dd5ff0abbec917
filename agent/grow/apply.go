package grow

import (
	"context"
	"fmt"
	"os"
)

// Apply makes the writes of c on dev, each a single-sector rewrite followed by an fsync, in the
// order Plan gave them (see Plan for why the table stays valid if power is cut in between).
// When dev is a block device it then tells the kernel the partition's new size with the BLKPG
// ioctl, which works while other partitions of the disk are mounted; for a regular file, such
// as a disk image in a test, there is no kernel to tell. A nil Change does nothing.
func Apply(ctx context.Context, dev *os.File, c *Change) error {
	if c == nil {
		return nil
	}
	for _, w := range c.Writes {
		// Stopping between two writes is safe: the table is valid after each of them.
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(w.Data) != SectorSize || w.Offset%SectorSize != 0 || w.Offset < 0 {
			return fmt.Errorf("a write of %d bytes at offset %d is not one whole sector", len(w.Data), w.Offset)
		}
		if _, err := dev.WriteAt(w.Data, w.Offset); err != nil {
			return fmt.Errorf("writing sector %d of %s: %w", w.Offset/SectorSize, dev.Name(), err)
		}
		if err := dev.Sync(); err != nil {
			return fmt.Errorf("syncing %s: %w", dev.Name(), err)
		}
	}
	// Only the data partition is resized in the kernel. Linux registers an extended partition
	// as a 1 KiB stub over its first EBR, whatever its size in the table (and so do the
	// partition's device and sysfs entries); growing that stub to the table's size would make
	// it overlap the logical partitions, which the kernel refuses, and would tell it nothing it
	// uses.
	return tellKernel(dev, c.Partition, c.Start, c.NewSize)
}

func isBlockDevice(m os.FileMode) bool {
	return m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0
}
