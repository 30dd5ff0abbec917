package basegen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

const sector = 512

// layout is where the partitions sit on the disk, in bytes.
type layout struct {
	bootStart, bootSize int64
	rootStart, rootSize int64
	total               int64
}

// newLayout places the boot partition at 4 MiB and the root partition after it on the next
// 4 MiB boundary, as Raspberry Pi OS images do; the disk ends with the root partition.
func newLayout(bootSize, rootSize int64) layout {
	l := layout{bootStart: BootStartSector * sector, bootSize: bootSize, rootSize: rootSize}
	l.rootStart = roundUp(l.bootStart+l.bootSize, align)
	l.total = l.rootStart + l.rootSize
	return l
}

// writeTable writes the MBR partition table with sfdisk: p1 FAT32 LBA (type c), p2 Linux.
func writeTable(ctx context.Context, img string, l layout, id ids) error {
	script := fmt.Sprintf("label: dos\nlabel-id: 0x%08x\nunit: sectors\nsector-size: 512\n\nstart=%d, size=%d, type=c\nstart=%d, size=%d, type=83\n",
		id.diskID, l.bootStart/sector, l.bootSize/sector, l.rootStart/sector, l.rootSize/sector)
	_, _, err := run(ctx, nil, []byte(script), "sfdisk", "--no-reread", "--no-tell-kernel", "-q", "--wipe", "never", "--wipe-partitions", "never", img)
	if err != nil {
		return fmt.Errorf("writing the partition table: %w", err)
	}
	return nil
}

const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
	blk      = 4096
)

// copySparse copies the file src into dst at offset off, writing only blocks that are not
// all zero, so holes in src (and zeros written as data) stay holes in dst. It asks the
// filesystem for src's data ranges and falls back to reading everything where it cannot.
func copySparse(ctx context.Context, dst *os.File, off int64, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	buf := make([]byte, 1<<20)
	zero := make([]byte, blk)
	copyRange := func(start, end int64) error {
		for pos := start; pos < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := int(min(int64(len(buf)), end-pos))
			if _, err := f.ReadAt(buf[:n], pos); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("reading %s at %d: %w", src, pos, err)
			}
			// Write maximal runs of non-zero blocks.
			for i := 0; i < n; {
				j := i
				for j < n && !bytes.Equal(buf[j:min(j+blk, n)], zero[:min(blk, n-j)]) {
					j += blk
				}
				j = min(j, n)
				if j > i {
					if _, err := dst.WriteAt(buf[i:j], off+pos+int64(i)); err != nil {
						return fmt.Errorf("writing at %d: %w", off+pos+int64(i), err)
					}
				}
				for j < n && bytes.Equal(buf[j:min(j+blk, n)], zero[:min(blk, n-j)]) {
					j += blk
				}
				i = j
			}
			pos += int64(n)
		}
		return nil
	}
	for pos := int64(0); pos < size; {
		data, err := f.Seek(pos, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) { // no data after pos
				return nil
			}
			return copyRange(pos, size) // SEEK_DATA unsupported
		}
		hole, err := f.Seek(data, seekHole)
		if err != nil {
			return copyRange(data, size)
		}
		if err := copyRange(data, hole); err != nil {
			return err
		}
		pos = hole
	}
	return nil
}
