package base

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"

	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/fat12"
	"github.com/diskfs/go-diskfs/filesystem/fat16"
	"github.com/diskfs/go-diskfs/filesystem/fat32"

	"github.com/edgeimg/edgeimg/builder/fatfs"
	"github.com/edgeimg/edgeimg/builder/tree"
)

// Limits that keep a corrupt boot partition from making the walk run forever.
const (
	maxFATDepth   = 32
	maxFATEntries = 100000
	maxFATTable   = 64 << 20
)

// BootFiles returns every file and directory of the FAT boot partition as a tree with paths
// relative to the partition root ("config.txt", "overlays/vc4-kms-v3d.dtbo"). Files are
// root:root 0644, directories 0755, times are the FAT modification times read as UTC. File
// contents are read lazily from the image's clusters when opened.
func (img *Image) BootFiles() (*tree.Tree, error) {
	p := img.Boot()
	if err := checkFATChains(img.f, p); err != nil {
		return nil, fmt.Errorf("%s: boot partition %d: %w", img.name, p.Number, err)
	}
	be := img.partitionBackend(p)
	var fsys filesystem.FileSystem
	err := guard(func() error {
		var errs []error
		if f, err := fat32.Read(be, p.Size, p.Start, sectorSize); err == nil {
			fsys = f
			return nil
		} else {
			errs = append(errs, fmt.Errorf("as FAT32: %w", err))
		}
		if f, err := fat16.Read(be, p.Size, p.Start, sectorSize); err == nil {
			fsys = f
			return nil
		} else {
			errs = append(errs, fmt.Errorf("as FAT16: %w", err))
		}
		if f, err := fat12.Read(be, p.Size, p.Start, sectorSize); err == nil {
			fsys = f
			return nil
		} else {
			errs = append(errs, fmt.Errorf("as FAT12: %w", err))
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: reading FAT boot partition %d: %w", img.name, p.Number, err)
	}
	t := tree.New()
	w := fatWalker{img: img, part: p, fs: fsys, t: t}
	if err := guard(func() error { return w.walk(".", "", 0) }); err != nil {
		return nil, fmt.Errorf("%s: boot partition %d: %w", img.name, p.Number, err)
	}
	return t, nil
}

type fatWalker struct {
	img     *Image
	part    Partition
	fs      filesystem.FileSystem
	t       *tree.Tree
	entries int
}

func (w *fatWalker) walk(dir, prefix string, depth int) error {
	if depth > maxFATDepth {
		return fmt.Errorf("%s: directories nested deeper than %d: corrupt directory structure?", dir, maxFATDepth)
	}
	des, err := w.fs.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading directory %s: %w", dir, err)
	}
	sort.Slice(des, func(i, j int) bool { return des[i].Name() < des[j].Name() })
	for _, de := range des {
		name := de.Name()
		if name == "" || name == "." || name == ".." || !validName(name) {
			return fmt.Errorf("directory %s holds an invalid name %q", dir, name)
		}
		w.entries++
		if w.entries > maxFATEntries {
			return fmt.Errorf("more than %d entries: corrupt directory structure?", maxFATEntries)
		}
		rel := path.Join(prefix, name)
		fsPath := rel
		info, err := de.Info()
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		mt := info.ModTime().UTC()
		if de.IsDir() {
			if err := w.t.Put(&tree.Entry{Path: rel, Kind: tree.Dir, Mode: 0o755, ModTime: mt}); err != nil {
				return err
			}
			if err := w.walk(fsPath, rel, depth+1); err != nil {
				return err
			}
			continue
		}
		e := &tree.Entry{Path: rel, Kind: tree.Regular, Mode: 0o644, ModTime: mt, Size: info.Size()}
		if e.Size == 0 {
			e.Content = tree.Bytes(nil)
		} else {
			c, err := w.content(fsPath, e.Size)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			e.Content = c
		}
		if err := w.t.Put(e); err != nil {
			return err
		}
	}
	return nil
}

func validName(n string) bool {
	for i := 0; i < len(n); i++ {
		if n[i] == '/' || n[i] == 0 {
			return false
		}
	}
	return true
}

// content locates the file's clusters so that opening it later reads straight from the image.
func (w *fatWalker) content(p string, size int64) (tree.Content, error) {
	f, err := w.fs.OpenFile(p, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ff, ok := f.(*fat12.File)
	if !ok {
		return nil, fmt.Errorf("unexpected FAT file type %T", f)
	}
	ranges, err := ff.GetDiskRanges()
	if err != nil {
		return nil, fmt.Errorf("cluster chain: %w", err)
	}
	c := &extentContent{r: w.img.f, size: size}
	left := size
	for _, r := range ranges {
		if left == 0 {
			break
		}
		off, n := int64(r.Offset), int64(r.Length)
		if off < 0 || n <= 0 || off > w.part.Size || n > w.part.Size-off {
			return nil, fmt.Errorf("cluster range %d+%d lies outside the partition", r.Offset, r.Length)
		}
		if n > left {
			n = left
		}
		c.parts = append(c.parts, tree.Section{R: w.img.f, Offset: w.part.Start + off, Size: n})
		left -= n
	}
	if left != 0 {
		return nil, fmt.Errorf("cluster chain holds %d bytes less than the file size %d", left, size)
	}
	return c, nil
}

// extentContent is a file stored in several runs of the image.
type extentContent struct {
	r     io.ReaderAt
	size  int64
	parts []tree.Section
}

// Open implements tree.Content.
func (c *extentContent) Open() (io.ReadCloser, error) {
	if len(c.parts) == 1 {
		return c.parts[0].Open()
	}
	rs := make([]io.Reader, len(c.parts))
	for i, s := range c.parts {
		rs[i] = io.NewSectionReader(s.R, s.Offset, s.Size)
	}
	return io.NopCloser(io.MultiReader(rs...)), nil
}

// checkFATChains reads the first FAT of the partition and rejects any cycle among its cluster
// chains: go-diskfs v1.9.4 follows chains without a bound and would loop forever.
func checkFATChains(r io.ReaderAt, p Partition) error {
	var b [sectorSize]byte
	if _, err := r.ReadAt(b[:], p.Start); err != nil {
		return fmt.Errorf("reading boot sector: %w", err)
	}
	bps := int64(binary.LittleEndian.Uint16(b[11:13]))
	spc := int64(b[13])
	reserved := int64(binary.LittleEndian.Uint16(b[14:16]))
	nfats := int64(b[16])
	rootEntries := int64(binary.LittleEndian.Uint16(b[17:19]))
	totSec := int64(binary.LittleEndian.Uint16(b[19:21]))
	if totSec == 0 {
		totSec = int64(binary.LittleEndian.Uint32(b[32:36]))
	}
	fatSz := int64(binary.LittleEndian.Uint16(b[22:24]))
	if fatSz == 0 {
		fatSz = int64(binary.LittleEndian.Uint32(b[36:40]))
	}
	if bps == 0 || spc == 0 || nfats == 0 || fatSz == 0 {
		return errors.New("boot sector has a zero sector size, cluster size, FAT count or FAT size")
	}
	rootSecs := (rootEntries*32 + bps - 1) / bps
	dataSec := totSec - reserved - nfats*fatSz - rootSecs
	if dataSec <= 0 {
		return errors.New("boot sector describes no data area")
	}
	if totSec*bps > p.Size {
		return fmt.Errorf("the FAT filesystem (%d sectors of %d bytes) is larger than its partition (%d bytes): truncated image?", totSec, bps, p.Size)
	}
	clusters := dataSec / spc
	bits := 32
	switch {
	case clusters < 4085:
		bits = 12
	case clusters < 65525:
		bits = 16
	}
	fatBytes := fatSz * bps
	if fatBytes > maxFATTable || reserved*bps+fatBytes > p.Size {
		return fmt.Errorf("FAT of %d bytes does not fit the partition", fatBytes)
	}
	fat := make([]byte, fatBytes)
	if _, err := r.ReadAt(fat, p.Start+reserved*bps); err != nil {
		return fmt.Errorf("reading FAT: %w", err)
	}
	var n uint32
	var next func(c uint32) uint32
	switch bits {
	case 12:
		n = uint32(fatBytes * 2 / 3)
		next = func(c uint32) uint32 {
			v := binary.LittleEndian.Uint16(fat[c+c/2:])
			if c&1 == 1 {
				return uint32(v >> 4)
			}
			return uint32(v & 0xfff)
		}
	case 16:
		n = uint32(fatBytes / 2)
		next = func(c uint32) uint32 { return uint32(binary.LittleEndian.Uint16(fat[2*c:])) }
	default:
		n = uint32(fatBytes / 4)
		next = func(c uint32) uint32 { return binary.LittleEndian.Uint32(fat[4*c:]) & 0x0fffffff }
	}
	if bits == 12 && n > 0 {
		n-- // the last 12-bit entry may straddle the end
	}
	return fatfs.CheckChains(n, next)
}
