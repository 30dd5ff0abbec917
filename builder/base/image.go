package base

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
)

// Filesystem names reported in Partition.FS.
const (
	FSVfat = "vfat"
	FSExt4 = "ext4"
	FSExt2 = "ext2" // ext2/ext3 without extents: recognised, but not readable as a root
)

// sectorSize is the logical sector size assumed for image files (SD cards and their images
// always use 512).
const sectorSize = 512

// Partition is one entry of the image's partition table.
type Partition struct {
	// Number is the 1-based index in the partition table (p1, p2, ...).
	Number int
	// Start and Size are in bytes from the beginning of the image.
	Start, Size int64
	// Type is the type code as the table spells it: two hex digits for MBR ("0c", "83"),
	// the type GUID for GPT.
	Type string
	// FS is the filesystem found by its superblock magic: "vfat", "ext4", "ext2" (ext2/ext3
	// without extents) or "" when unrecognised. The type code plays no part.
	FS string
}

// Image is an opened base disk image. Trees returned by its methods read file contents from
// the image (or from the cache) on demand, so they stay valid only until Close.
type Image struct {
	// Table is the partition table kind: "mbr" or "gpt".
	Table string
	// Partitions lists the non-empty entries in table order.
	Partitions []Partition

	name     string
	f        *os.File
	be       backend.Storage
	size     int64
	boot     int // index into Partitions
	root     int
	mu       sync.Mutex
	closers  []io.Closer
	readerID string // identifies this reader's output format; part of cache validation
}

// ErrNotDiskImage is wrapped by Open's error when the file holds no usable partition table.
var ErrNotDiskImage = errors.New("not a disk image")

// Open reads the partition table of the raw disk image at path (read-only), probes each
// partition's filesystem, and picks the boot partition (the first FAT one) and the root
// partition (the first ext4 one after it). Errors name the file and what is missing.
func Open(path string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening base image: %w", err)
	}
	img, err := open(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return img, nil
}

func open(name string, f *os.File) (*Image, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	size := st.Size()
	if size == 0 {
		return nil, fmt.Errorf("%s: empty file: %w", name, ErrNotDiskImage)
	}
	if size < 2*sectorSize {
		return nil, fmt.Errorf("%s: %d bytes is too small for a partition table: %w", name, size, ErrNotDiskImage)
	}
	var sector0 [sectorSize]byte
	if _, err := f.ReadAt(sector0[:], 0); err != nil {
		return nil, fmt.Errorf("%s: reading the first sector: %w", name, err)
	}
	if looksLikeFAT(sector0[:]) {
		return nil, fmt.Errorf("%s: holds a bare FAT filesystem, not a partitioned disk: %w", name, ErrNotDiskImage)
	}
	if probeExt(f, 0, size) != "" {
		return nil, fmt.Errorf("%s: holds a bare ext filesystem, not a partitioned disk: %w", name, ErrNotDiskImage)
	}

	be := file.New(f, true)
	var table partition.Table
	err = guard(func() error {
		var err error
		table, err = partition.Read(be, sectorSize, sectorSize)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: no MBR or GPT partition table (%v): %w", name, err, ErrNotDiskImage)
	}

	img := &Image{name: name, f: f, be: be, size: size, boot: -1, root: -1, readerID: readerVersion}
	switch t := table.(type) {
	case *mbr.Table:
		img.Table = "mbr"
		for _, p := range t.Partitions {
			if p == nil || p.Type == mbr.Empty || p.Size == 0 {
				continue
			}
			if p.Type == mbr.Type(0xee) {
				return nil, fmt.Errorf("%s: protective MBR without a valid GPT behind it: %w", name, ErrNotDiskImage)
			}
			img.Partitions = append(img.Partitions, Partition{
				Number: p.Index, Start: int64(p.Start) * sectorSize, Size: int64(p.Size) * sectorSize,
				Type: fmt.Sprintf("%02x", uint8(p.Type)),
			})
		}
	case *gpt.Table:
		img.Table = "gpt"
		for _, p := range t.Partitions {
			if p == nil || p.Type == gpt.Unused || p.Size == 0 {
				continue
			}
			img.Partitions = append(img.Partitions, Partition{
				Number: p.Index, Start: p.GetStart(), Size: p.GetSize(), Type: string(p.Type),
			})
		}
	default:
		return nil, fmt.Errorf("%s: unsupported partition table %q: %w", name, table.Type(), ErrNotDiskImage)
	}
	if len(img.Partitions) == 0 {
		return nil, fmt.Errorf("%s: the %s partition table has no partitions: %w", name, img.Table, ErrNotDiskImage)
	}
	for i := range img.Partitions {
		p := &img.Partitions[i]
		if p.Start < 0 || p.Size < 0 || p.Start > size || p.Size > size-p.Start {
			return nil, fmt.Errorf("%s: partition %d (bytes %d to %d) extends beyond the end of the file (%d bytes): truncated image?",
				name, p.Number, p.Start, p.Start+p.Size, size)
		}
		p.FS = probe(f, p.Start, p.Size)
	}
	for i, p := range img.Partitions {
		if p.FS == FSVfat {
			img.boot = i
			break
		}
	}
	if img.boot < 0 {
		return nil, fmt.Errorf("%s: no FAT partition (partitions: %s)", name, describe(img.Partitions))
	}
	for i := img.boot + 1; i < len(img.Partitions); i++ {
		if img.Partitions[i].FS == FSExt4 {
			img.root = i
			break
		}
	}
	if img.root < 0 {
		return nil, fmt.Errorf("%s: no ext4 root partition after the FAT boot partition %d (partitions: %s)",
			name, img.Partitions[img.boot].Number, describe(img.Partitions))
	}
	return img, nil
}

func describe(ps []Partition) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		fs := p.FS
		if fs == "" {
			fs = "unknown"
		}
		s += fmt.Sprintf("p%d type %s %s", p.Number, p.Type, fs)
	}
	return s
}

// Name is the path the image was opened from.
func (img *Image) Name() string { return img.name }

// Boot is the boot partition: the first one holding a FAT filesystem.
func (img *Image) Boot() Partition { return img.Partitions[img.boot] }

// Root is the root partition: the first ext4 one after the boot partition.
func (img *Image) Root() Partition { return img.Partitions[img.root] }

// Close releases the image file and any cache file the trees read from. Trees returned
// earlier can no longer open their contents afterwards.
func (img *Image) Close() error {
	img.mu.Lock()
	defer img.mu.Unlock()
	var errs []error
	for _, c := range img.closers {
		errs = append(errs, c.Close())
	}
	img.closers = nil
	if img.f != nil {
		errs = append(errs, img.f.Close())
		img.f = nil
	}
	return errors.Join(errs...)
}

func (img *Image) keepOpen(c io.Closer) {
	img.mu.Lock()
	img.closers = append(img.closers, c)
	img.mu.Unlock()
}

// probe names the filesystem at [start, start+size) by its magic numbers.
func probe(r io.ReaderAt, start, size int64) string {
	var sec [sectorSize]byte
	if size >= sectorSize {
		if _, err := r.ReadAt(sec[:], start); err == nil && looksLikeFAT(sec[:]) {
			return FSVfat
		}
	}
	return probeExt(r, start, size)
}

// looksLikeFAT reports whether b (a first sector) is a FAT boot sector: the 0x55AA
// signature, a jump instruction, a sane BIOS parameter block and a FAT type string.
func looksLikeFAT(b []byte) bool {
	if len(b) < sectorSize || b[510] != 0x55 || b[511] != 0xaa {
		return false
	}
	if b[0] != 0xeb && b[0] != 0xe9 {
		return false
	}
	bps := binary.LittleEndian.Uint16(b[11:13])
	spc := b[13]
	if bps < 512 || bps > 4096 || bps&(bps-1) != 0 || spc == 0 || spc&(spc-1) != 0 {
		return false
	}
	if binary.LittleEndian.Uint16(b[14:16]) == 0 || b[16] == 0 { // reserved sectors, number of FATs
		return false
	}
	return string(b[0x52:0x57]) == "FAT32" || string(b[0x36:0x39]) == "FAT"
}

// probeExt recognises an ext2/3/4 superblock at start+1024.
func probeExt(r io.ReaderAt, start, size int64) string {
	if size < 2048 {
		return ""
	}
	var sb [256]byte
	if _, err := r.ReadAt(sb[:], start+1024); err != nil {
		return ""
	}
	if binary.LittleEndian.Uint16(sb[0x38:0x3a]) != 0xef53 {
		return ""
	}
	const incompatExtents = 0x40
	if binary.LittleEndian.Uint32(sb[0x60:0x64])&incompatExtents != 0 {
		return FSExt4
	}
	return FSExt2
}

// guard runs fn and turns a panic inside go-diskfs (which trusts on-disk structures more
// than a reader of untrusted images may) into an error.
func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("corrupt on-disk structure (reader panicked: %v)", r)
		}
	}()
	return fn()
}

// bounded is the image seen through one partition: reads outside [start, end) fail. go-diskfs
// v1.9.4 does not bound a filesystem's reads by its partition, so a truncated filesystem would
// otherwise read the bytes that follow it (often zeros) as its own.
type bounded struct {
	backend.Storage
	start, end int64
}

func (img *Image) partitionBackend(p Partition) backend.Storage {
	return bounded{Storage: img.be, start: p.Start, end: p.Start + p.Size}
}

// ReadAt implements io.ReaderAt within the partition.
func (b bounded) ReadAt(p []byte, off int64) (int, error) {
	if off < b.start || off >= b.end {
		return 0, fmt.Errorf("read at byte %d outside the partition (bytes %d to %d): %w", off, b.start, b.end, io.EOF)
	}
	if max := b.end - off; int64(len(p)) > max {
		n, err := b.Storage.ReadAt(p[:max], off)
		if err == nil {
			err = fmt.Errorf("read past the end of the partition at byte %d: %w", b.end, io.EOF)
		}
		return n, err
	}
	return b.Storage.ReadAt(p, off)
}

// checkExtSize rejects an ext filesystem larger than its partition (a truncated image).
func checkExtSize(r io.ReaderAt, p Partition) error {
	var sb [1024]byte
	if _, err := r.ReadAt(sb[:], p.Start+1024); err != nil {
		return fmt.Errorf("reading the ext4 superblock: %w", err)
	}
	logBlock := binary.LittleEndian.Uint32(sb[0x18:])
	if logBlock > 6 {
		return fmt.Errorf("ext4 superblock has an invalid block size 2^%d KiB", logBlock)
	}
	blocks := uint64(binary.LittleEndian.Uint32(sb[0x04:]))
	const incompat64bit = 0x80
	if binary.LittleEndian.Uint32(sb[0x60:])&incompat64bit != 0 {
		blocks |= uint64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
	}
	bytes := blocks << (10 + logBlock)
	if blocks>>(53-logBlock) != 0 || bytes > uint64(p.Size) {
		return fmt.Errorf("the ext4 filesystem (%d blocks of %d bytes) is larger than its partition (%d bytes): truncated image?",
			blocks, 1024<<logBlock, p.Size)
	}
	return nil
}
