package apply

import (
	"fmt"
	"io"
	"os"
)

// ReadOnlyCard is a Card that can also open a partition for reading only. Readers of the
// active slot (the delta download's scan) use it when the card offers it, so that nothing
// but the inactive slot is ever opened for writing.
type ReadOnlyCard interface {
	Card
	// ReadPartition opens partition n for reading; its WriteAt always fails.
	ReadPartition(n int) (Partition, error)
}

// BlockDevices is the Card of a running device: partition n is the block device pathOf(n)
// (e.g. /dev/mmcblk0p6, or /dev/disk/by-partuuid/SIGNATURE-06), its size the device's.
// It is a ReadOnlyCard.
func BlockDevices(pathOf func(n int) string) ReadOnlyCard {
	return blockCard{pathOf}
}

type blockCard struct{ pathOf func(n int) string }

func (c blockCard) Partition(n int) (Partition, error) { return c.open(n, os.O_RDWR) }

func (c blockCard) ReadPartition(n int) (Partition, error) { return c.open(n, os.O_RDONLY) }

func (c blockCard) open(n, flag int) (Partition, error) {
	p := c.pathOf(n)
	f, err := os.OpenFile(p, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("partition %d: %w", n, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("partition %d: size of %s: %w", n, p, err)
	}
	return &blockDevice{File: f, size: size, readOnly: flag == os.O_RDONLY}, nil
}

type blockDevice struct {
	*os.File
	size     int64
	readOnly bool
}

func (b *blockDevice) Size() int64 { return b.size }

func (b *blockDevice) WriteAt(p []byte, off int64) (int, error) {
	if b.readOnly {
		return 0, fmt.Errorf("%s: opened for reading only", b.Name())
	}
	if off < 0 || off+int64(len(p)) > b.size {
		return 0, fmt.Errorf("%s: write of %d bytes at %d beyond its %d bytes", b.Name(), len(p), off, b.size)
	}
	return b.File.WriteAt(p, off)
}
