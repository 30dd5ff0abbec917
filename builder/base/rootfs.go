package base

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// readerVersion names the way this package turns an ext4 filesystem into a tree; callers
// fold it into cache keys so that a change here invalidates old cache entries.
const readerVersion = "base-rootfs-3"

// ReaderVersion identifies how RootFS reads a filesystem. Include it in the key passed to
// RootFSCached so that cache entries written by an older reader are not reused.
func ReaderVersion() string { return readerVersion }

// Limits that keep a corrupt root filesystem from making the walk run away.
const (
	maxExtDepth = 256
)

// RootFS reads the whole ext4 root filesystem into a tree: every entry with its owner, mode
// (including setuid, setgid and sticky), modification time, symlink target, device numbers,
// extended attributes, and hard links (of the names sharing an inode the first in path order
// is the Regular entry, the others Hardlink entries naming it). Contents are not read: each
// regular file's Content reads it from the image through the file's extents when opened.
//
// The metadata is read by inode number (extfs.go), each directory once, so the walk takes
// time proportional to the filesystem's size.
func (img *Image) RootFS(ctx context.Context) (*tree.Tree, error) {
	p := img.Root()
	if err := checkExtSize(img.f, p); err != nil {
		return nil, fmt.Errorf("%s: root partition %d: %w", img.name, p.Number, err)
	}
	fs, err := openExtFS(io.NewSectionReader(img.f, p.Start, p.Size), p.Size)
	if err != nil {
		return nil, fmt.Errorf("%s: reading ext4 root partition %d: %w", img.name, p.Number, err)
	}
	w := &extWalker{ctx: ctx, fs: fs, part: p, img: img, dirs: map[uint32]bool{}, inodes: map[uint32][]*tree.Entry{}}
	root, err := fs.inode(rootIno)
	if err == nil && root.kind() != modeDir {
		err = fmt.Errorf("root inode is not a directory (mode %06o)", root.mode)
	}
	if err == nil {
		w.dirs[rootIno] = true
		// The reader checks every on-disk number it uses; guard turns a missed one into an
		// error rather than a crash.
		err = guard(func() error { return w.walk(root, "", 0) })
	}
	if err != nil {
		return nil, fmt.Errorf("%s: root partition %d: %w", img.name, p.Number, err)
	}
	t, err := w.build()
	if err != nil {
		return nil, fmt.Errorf("%s: root partition %d: %w", img.name, p.Number, err)
	}
	return t, nil
}

type extWalker struct {
	ctx     context.Context
	fs      *extFS
	part    Partition
	img     *Image
	dirs    map[uint32]bool // directory inodes seen: a directory reached twice is a loop
	inodes  map[uint32][]*tree.Entry
	entries []*tree.Entry
	n       int
}

func (w *extWalker) walk(dir *extInode, prefix string, depth int) error {
	if depth > maxExtDepth {
		return fmt.Errorf("/%s: directories nested deeper than %d", prefix, maxExtDepth)
	}
	des, err := w.fs.readDir(dir)
	if err != nil {
		return fmt.Errorf("reading directory /%s: %w", prefix, err)
	}
	sort.Slice(des, func(i, j int) bool { return des[i].name < des[j].name })
	for i, de := range des {
		name := de.name
		if i > 0 && des[i-1].name == name {
			return fmt.Errorf("directory /%s lists %q twice", prefix, name)
		}
		if strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
			return fmt.Errorf("directory /%s holds an invalid name %q", prefix, name)
		}
		w.n++
		if w.n%256 == 0 {
			if err := w.ctx.Err(); err != nil {
				return err
			}
		}
		rel := name
		if prefix != "" {
			rel = prefix + "/" + name
		}
		in, err := w.fs.inode(de.ino)
		if err != nil {
			return fmt.Errorf("/%s: %w", rel, err)
		}
		e, err := w.entry(rel, in)
		if err != nil {
			return fmt.Errorf("/%s: %w", rel, err)
		}
		w.entries = append(w.entries, e)
		switch e.Kind {
		case tree.Dir:
			if w.dirs[de.ino] {
				return fmt.Errorf("/%s: directory inode %d reached twice: corrupt directory structure", rel, de.ino)
			}
			w.dirs[de.ino] = true
			if err := w.walk(in, rel, depth+1); err != nil {
				return err
			}
		case tree.Regular:
			w.inodes[de.ino] = append(w.inodes[de.ino], e)
		}
	}
	return nil
}

func (w *extWalker) entry(p string, in *extInode) (*tree.Entry, error) {
	e := &tree.Entry{
		Path:    p,
		Mode:    uint32(in.mode) & 0o7777,
		UID:     in.uid,
		GID:     in.gid,
		ModTime: time.Unix(in.mtime, in.nsec).UTC(),
	}
	switch in.kind() {
	case modeRegular:
		e.Kind, e.Size = tree.Regular, in.size
		if e.Size > w.part.Size {
			return nil, fmt.Errorf("size %d is larger than the partition", e.Size)
		}
		if e.Size == 0 {
			e.Content = tree.Bytes(nil)
		} else {
			e.Content = w.content(p, in.ino, e.Size)
		}
	case modeDir:
		e.Kind = tree.Dir
	case modeSymlink:
		target, err := w.fs.symlink(in)
		if err != nil {
			return nil, err
		}
		e.Kind, e.Linkname = tree.Symlink, target
	case modeChar:
		e.Kind = tree.CharDev
		e.Devmajor, e.Devminor = in.device()
	case modeBlock:
		e.Kind = tree.BlockDev
		e.Devmajor, e.Devminor = in.device()
	case modeFIFO:
		e.Kind = tree.FIFO
	case modeSocket:
		e.Kind = tree.Socket
	default:
		return nil, fmt.Errorf("unknown file type in mode %06o", in.mode)
	}
	xa, err := w.fs.xattrs(in)
	if err != nil {
		return nil, fmt.Errorf("extended attributes: %w", err)
	}
	e.Xattrs = xa
	return e, nil
}

// content reads the file through its extents each time it is opened.
func (w *extWalker) content(p string, ino uint32, size int64) tree.Content {
	fs := w.fs
	name := w.img.name
	return tree.Func(func() (io.ReadCloser, error) {
		in, err := fs.inode(ino)
		if err == nil && in.size != size {
			err = fmt.Errorf("inode %d now has %d bytes, not %d", ino, in.size, size)
		}
		var r io.Reader
		if err == nil {
			r, err = fs.open(in)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: opening /%s in the root filesystem: %w", name, p, err)
		}
		return &fileContent{r: r, name: name, path: p, left: size}, nil
	})
}

// fileContent checks that a file's content has exactly the size its inode states and names
// the file in errors.
type fileContent struct {
	r          io.Reader
	name, path string
	left       int64
}

func (f *fileContent) Read(b []byte) (int, error) {
	if f.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > f.left {
		b = b[:f.left]
	}
	n, err := f.r.Read(b)
	f.left -= int64(n)
	if errors.Is(err, io.EOF) {
		if f.left > 0 {
			return n, fmt.Errorf("%s: /%s: %w", f.name, f.path, io.ErrUnexpectedEOF)
		}
		return n, io.EOF
	}
	if err != nil {
		return n, fmt.Errorf("%s: reading /%s: %w", f.name, f.path, err)
	}
	if n == 0 && len(b) > 0 {
		return 0, fmt.Errorf("%s: reading /%s: no progress", f.name, f.path)
	}
	return n, nil
}

func (f *fileContent) Close() error { return nil }

// build turns the collected entries into a tree, making every name of a multiply linked
// inode after the first (in path order) a hard link to it.
func (w *extWalker) build() (*tree.Tree, error) {
	for _, es := range w.inodes {
		if len(es) < 2 {
			continue
		}
		sort.Slice(es, func(i, j int) bool { return tree.PathLess(es[i].Path, es[j].Path) })
		for _, e := range es[1:] {
			*e = tree.Entry{Path: e.Path, Kind: tree.Hardlink, Linkname: es[0].Path,
				Mode: es[0].Mode, UID: es[0].UID, GID: es[0].GID, ModTime: es[0].ModTime}
		}
	}
	t := tree.New()
	var links []*tree.Entry
	for _, e := range w.entries {
		if e.Kind == tree.Hardlink {
			links = append(links, e)
			continue
		}
		if err := t.Put(e); err != nil {
			return nil, err
		}
	}
	for _, e := range links {
		if err := t.Put(e); err != nil {
			return nil, err
		}
	}
	return t, nil
}
