package fatfs

import (
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/filesystem/fat32"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// File is one entry of a FAT filesystem.
type File struct {
	// Path is slash-separated and relative, e.g. "overlays/foo.dtbo". Parent directories
	// are created as needed. Names are printable ASCII without \ / : * ? " < > |, do not
	// start with a dot or end with a dot or space, and are unique ignoring case.
	Path string
	// Dir marks a directory.
	Dir bool
	// Size is the number of bytes Content yields (at most 4 GiB - 1).
	Size int64
	// Content opens the file's bytes; nil for directories and empty files.
	Content tree.Content
}

// Options are the identity of the filesystem.
type Options struct {
	// Label is the volume label: 1 to 11 characters from A-Z 0-9 space ! # $ % & ' ( ) - @ ^ _ ` { } ~,
	// not starting with a space.
	Label string
	// VolumeID is the volume serial number (blkid shows it as UUID XXXX-XXXX). The caller
	// derives it deterministically.
	VolumeID uint32
	// Epoch is every timestamp in the filesystem (FAT keeps local time with two-second
	// resolution; the UTC wall clock of Epoch is stored, clamped to 1980-2107).
	Epoch time.Time
}

const (
	sectorSize      = 512
	reservedSectors = 32
	// minClusters is the smallest cluster count of a FAT32 filesystem: with fewer, FAT
	// drivers that follow Microsoft's specification take it for FAT16.
	minClusters = 65525
	// MaxSize is the largest filesystem Write makes.
	MaxSize int64 = 32 << 30
	// MinSize is the smallest partition Write accepts: with go-diskfs's layout (512-byte
	// clusters, 32 reserved sectors, two FATs) it is the first size giving 65525 clusters
	// (32.51 MiB).
	MinSize int64 = 34_089_472
)

// layout is the on-disk geometry go-diskfs v1.9.4 picks for a size, reproduced here so
// Write can check it before asking go-diskfs for it (see fat32.Create).
type layout struct {
	size              int64 // bytes of the filesystem (<= the partition)
	sectorsPerCluster int64
	sectorsPerFAT     int64
	clusters          int64
}

func (l layout) clusterSize() int64 { return l.sectorsPerCluster * sectorSize }
func (l layout) dataStart() int64 {
	return (reservedSectors + 2*l.sectorsPerFAT) * sectorSize
}

func diskfsLayout(size int64) layout {
	const mb, gb = 1 << 20, 1 << 30
	var clusterBytes int64
	switch {
	case size <= 260*mb:
		clusterBytes = 512
	case size <= 8*gb:
		clusterBytes = 4096
	case size <= 16*gb:
		clusterBytes = 8192
	case size <= 32*gb:
		clusterBytes = 16384
	default:
		clusterBytes = 32768
	}
	spc := clusterBytes / sectorSize
	total := size / sectorSize
	denom := sectorSize*spc + 8
	spf := (4*(total-reservedSectors) + denom - 1) / denom
	return layout{
		size:              total * sectorSize,
		sectorsPerCluster: spc,
		sectorsPerFAT:     spf,
		clusters:          (total - reservedSectors - 2*spf) / spc,
	}
}

// valid reports whether the FAT has an entry for every cluster (plus the two reserved
// entries). go-diskfs's formula can come out a few entries short, which fsck.vfat rejects
// ("Filesystem has N clusters but only space for N-2 FAT entries").
func (l layout) valid() bool { return l.sectorsPerFAT*sectorSize/4 >= l.clusters+2 }

// planLayout picks the largest filesystem size not above size for which go-diskfs's
// layout is valid; the few sectors it gives up at the end of the partition stay unused.
func planLayout(size int64) (layout, error) {
	size -= size % sectorSize
	if size > MaxSize {
		return layout{}, fmt.Errorf("size %d is larger than the %d bytes supported", size, MaxSize)
	}
	for s := size; s > size-64*1024 && s > 0; s -= sectorSize {
		l := diskfsLayout(s)
		if l.clusters < minClusters {
			break
		}
		if l.valid() {
			return l, nil
		}
	}
	return layout{}, fmt.Errorf("size %d is too small for FAT32 (needs at least %d clusters, which takes %d bytes)", size, minClusters, MinSize)
}

// Write creates a FAT32 filesystem of size bytes at byte offset off of the image f,
// holding files. Both off and size are multiples of 512; size is at least MinSize.
//
// The result is reproducible: the same files and options give the same bytes, provided
// the window reads as zero beforehand (a fresh sparse image): Write does not clear free
// clusters or the slack after each file's last byte. Up to a few sectors at the end of the
// window may be left outside the filesystem to keep go-diskfs's layout valid.
func Write(f *os.File, off, size int64, files []File, o Options) error {
	if err := write(f, off, size, files, o, true); err != nil {
		return fmt.Errorf("FAT32 partition %q: %w", o.Label, err)
	}
	return nil
}

// write is Write; without fix it leaves go-diskfs's output as it is (for tests showing
// what fixup corrects).
func write(f *os.File, off, size int64, files []File, o Options, fix bool) error {
	if off < 0 || off%sectorSize != 0 || size%sectorSize != 0 {
		return fmt.Errorf("offset %d or size %d is not a multiple of %d", off, size, sectorSize)
	}
	if err := checkLabel(o.Label); err != nil {
		return err
	}
	l, err := planLayout(size)
	if err != nil {
		return err
	}
	root, err := buildTree(files)
	if err != nil {
		return err
	}
	need := root.clusters(l.clusterSize(), true)
	if need > l.clusters {
		return fmt.Errorf("content needs %d bytes (%d clusters of %d bytes) but the %d-byte partition holds %d bytes (%d clusters)",
			need*l.clusterSize(), need, l.clusterSize(), size, l.clusters*l.clusterSize(), l.clusters)
	}

	// The image must cover the window so that tools see the whole filesystem.
	if st, err := f.Stat(); err != nil {
		return err
	} else if st.Size() < off+size {
		if err := f.Truncate(off + size); err != nil {
			return fmt.Errorf("extending the image to %d bytes: %w", off+size, err)
		}
	}

	w := newWindow(f, off, l.size, l.dataStart())
	fs, err := fat32.Create(w, l.size, 0, sectorSize, o.Label, true)
	if err != nil {
		return fmt.Errorf("creating the filesystem: %w", err)
	}
	if got := int64(fs.DataStart()); got != l.dataStart() || int64(fs.BytesPerCluster()) != l.clusterSize() {
		return fmt.Errorf("go-diskfs placed the data area at %d with %d-byte clusters, expected %d and %d",
			got, fs.BytesPerCluster(), l.dataStart(), l.clusterSize())
	}
	buf := make([]byte, 0, 16<<20) // a multiple of every cluster size
	if err := root.create(fs, buf); err != nil {
		return err
	}
	if !fix {
		return w.finish()
	}
	if err := fixup(w, l, o, off); err != nil {
		return fmt.Errorf("correcting what go-diskfs wrote: %w", err)
	}
	if err := w.finish(); err != nil {
		return fmt.Errorf("writing the image: %w", err)
	}
	return nil
}

func checkLabel(label string) error {
	if label == "" || len(label) > 11 || label[0] == ' ' {
		return fmt.Errorf("volume label %q must be 1 to 11 characters, not starting with a space", label)
	}
	for _, c := range []byte(label) {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(" !#$%&'()-@^_`{}~", c) >= 0) {
			return fmt.Errorf("volume label %q: character %q is not allowed (use A-Z, 0-9, space and !#$%%&'()-@^_`{}~)", label, c)
		}
	}
	return nil
}

// node is a directory or file of the tree being written.
type node struct {
	name     string
	path     string // with a leading slash, as go-diskfs wants it
	dir      bool
	file     *File
	children []*node
}

func buildTree(files []File) (*node, error) {
	root := &node{path: "/", dir: true}
	byKey := map[string]*node{"": root}
	var mk func(p string) (*node, error)
	mk = func(p string) (*node, error) {
		key := strings.ToUpper(p)
		if n, ok := byKey[key]; ok {
			if !n.dir {
				return nil, fmt.Errorf("%s is a file and a directory", p)
			}
			return n, nil
		}
		parent, err := mk(path.Dir(p))
		if err != nil {
			return nil, err
		}
		n := &node{name: path.Base(p), path: "/" + p, dir: true}
		parent.children = append(parent.children, n)
		byKey[key] = n
		return n, nil
	}
	byKey["."] = root
	for i := range files {
		fl := &files[i]
		if err := checkPath(fl.Path); err != nil {
			return nil, err
		}
		if fl.Size < 0 || fl.Size > 1<<32-1 {
			return nil, fmt.Errorf("%s: size %d is outside FAT32's 0 to 4 GiB - 1", fl.Path, fl.Size)
		}
		if fl.Dir {
			if fl.Content != nil || fl.Size != 0 {
				return nil, fmt.Errorf("%s: a directory has no content", fl.Path)
			}
			if _, err := mk(fl.Path); err != nil {
				return nil, err
			}
			continue
		}
		if fl.Content == nil && fl.Size != 0 {
			return nil, fmt.Errorf("%s: %d bytes but no content", fl.Path, fl.Size)
		}
		key := strings.ToUpper(fl.Path)
		if _, ok := byKey[key]; ok {
			return nil, fmt.Errorf("%s: given twice (FAT names ignore case)", fl.Path)
		}
		parent, err := mk(path.Dir(fl.Path))
		if err != nil {
			return nil, err
		}
		n := &node{name: path.Base(fl.Path), path: "/" + fl.Path, file: fl}
		parent.children = append(parent.children, n)
		byKey[key] = n
	}
	root.sort()
	return root, nil
}

// sort orders each directory: names that are 8.3 names apart from case first, then the
// rest, each group by name. go-diskfs finds an existing entry by long or short name, so a
// plain 8.3 name created after a long name with that short form would open the wrong file;
// created first, it cannot.
func (n *node) sort() {
	slices.SortFunc(n.children, func(a, b *node) int {
		if sa, sb := isShortName(a.name), isShortName(b.name); sa != sb {
			if sa {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	for _, c := range n.children {
		c.sort()
	}
}

// isShortName reports whether name, upper-cased, is a valid 8.3 name.
func isShortName(name string) bool {
	stem, ext, _ := strings.Cut(name, ".")
	if stem == "" || len(stem) > 8 || len(ext) > 3 || strings.Contains(ext, ".") {
		return false
	}
	for _, c := range []byte(stem + ext) {
		c = byte(strings.ToUpper(string(c))[0])
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'()-@^_`{}~", c) >= 0) {
			return false
		}
	}
	return true
}

func checkPath(p string) error {
	if p == "" || path.Clean(p) != p || strings.HasPrefix(p, "/") || p == "." {
		return fmt.Errorf("path %q is not a clean relative path", p)
	}
	for _, name := range strings.Split(p, "/") {
		if name == ".." {
			return fmt.Errorf("path %q leaves the filesystem", p)
		}
		if len(name) > 255 {
			return fmt.Errorf("path %q: name longer than 255 characters", p)
		}
		if name[0] == '.' || strings.HasSuffix(name, ".") || strings.HasSuffix(name, " ") || name[0] == ' ' {
			return fmt.Errorf("path %q: FAT names may not start with a dot or space or end with a dot or space", p)
		}
		for _, c := range name {
			if c < 0x20 || c > 0x7e || strings.ContainsRune(`\/:*?"<>|`, c) {
				return fmt.Errorf("path %q: character %q is not allowed in a FAT name here", p, c)
			}
		}
	}
	return nil
}

// clusters is an upper bound of the clusters n and everything below it take while they
// are written: every name counted with long-name entries, every directory with its dot
// entries (the root with the volume label instead), empty files with the cluster go-diskfs
// gives them until fixup frees it.
func (n *node) clusters(clusterSize int64, isRoot bool) int64 {
	if !n.dir {
		return max(1, (n.file.Size+clusterSize-1)/clusterSize)
	}
	slots, total := int64(2), int64(0)
	if isRoot {
		slots = 1
	}
	for _, c := range n.children {
		slots += 1 + (int64(len(c.name))+12)/13
		total += c.clusters(clusterSize, false)
	}
	return total + max(1, (slots*32+clusterSize-1)/clusterSize)
}

// create writes the children of directory n, then descends into the subdirectories.
func (n *node) create(fs *fat32.FileSystem, buf []byte) error {
	for _, c := range n.children {
		if c.dir {
			if err := fs.Mkdir(c.path); err != nil {
				return fmt.Errorf("creating directory %s: %w", c.path, err)
			}
			continue
		}
		if err := writeFile(fs, c, buf); err != nil {
			return err
		}
	}
	for _, c := range n.children {
		if c.dir {
			if err := c.create(fs, buf); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeFile copies a file's content in large pieces: go-diskfs rewalks the cluster chain
// on every Write, so one Write per cluster would be quadratic.
func writeFile(fs *fat32.FileSystem, n *node, buf []byte) error {
	out, err := fs.OpenFile(n.path, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("creating %s: %w", n.path, err)
	}
	defer out.Close()
	if n.file.Size == 0 {
		return nil
	}
	in, err := n.file.Content.Open()
	if err != nil {
		return fmt.Errorf("opening the content of %s: %w", n.path, err)
	}
	defer in.Close()
	for left := n.file.Size; left > 0; {
		b := buf[:min(int64(cap(buf)), left)]
		if _, err := io.ReadFull(in, b); err != nil {
			return fmt.Errorf("reading %s: content is shorter than its size %d: %w", n.path, n.file.Size, err)
		}
		if _, err := out.Write(b); err != nil {
			return fmt.Errorf("writing %s: %w", n.path, err)
		}
		left -= int64(len(b))
	}
	if k, _ := io.ReadFull(in, buf[:1]); k != 0 {
		return fmt.Errorf("reading %s: content is longer than its size %d", n.path, n.file.Size)
	}
	return nil
}
