package apply

import (
	"fmt"
	"io"
	"os"
)

// BlockDevices is the Card of a running device: partition n is the block device pathOf(n)
// (e.g. /dev/mmcblk0p6, or /dev/disk/by-partuuid/SIGNATURE-06), its size the device's.
func BlockDevices(pathOf func(n int) string) Card {
	return CardFunc(func(n int) (Partition, error) {
		p := pathOf(n)
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("partition %d: %w", n, err)
		}
		size, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("partition %d: size of %s: %w", n, p, err)
		}
		return &blockDevice{File: f, size: size}, nil
	})
}

type blockDevice struct {
	*os.File
	size int64
}

func (b *blockDevice) Size() int64 { return b.size }

func (b *blockDevice) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > b.size {
		return 0, fmt.Errorf("%s: write of %d bytes at %d beyond its %d bytes", b.Name(), len(p), off, b.size)
	}
	return b.File.WriteAt(p, off)
}
