package base

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/filesystem/ext4"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// readerVersion names the way this package turns an ext4 filesystem into a tree; callers
// fold it into cache keys so that a change here invalidates old cache entries.
const readerVersion = "base-rootfs-1"

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
// regular file's Content reads it from the image through go-diskfs when opened.
func (img *Image) RootFS(ctx context.Context) (*tree.Tree, error) {
	p := img.Root()
	if err := checkExtSize(img.f, p); err != nil {
		return nil, fmt.Errorf("%s: root partition %d: %w", img.name, p.Number, err)
	}
	var fsys *ext4.FileSystem
	err := guard(func() error {
		var err error
		fsys, err = ext4.Read(img.partitionBackend(p), p.Size, p.Start, sectorSize)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: reading ext4 root partition %d: %w", img.name, p.Number, err)
	}
	w := &extWalker{ctx: ctx, fs: fsys, part: p, img: img, dirs: map[uint32]bool{}, inodes: map[uint32][]*tree.Entry{}}
	if err := guard(func() error { return w.walk(".", "", 0) }); err != nil {
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
	fs      *ext4.FileSystem
	part    Partition
	img     *Image
	dirs    map[uint32]bool // directory inodes seen: a directory reached twice is a loop
	inodes  map[uint32][]*tree.Entry
	entries []*tree.Entry
	n       int
}

func (w *extWalker) walk(dir, prefix string, depth int) error {
	if depth > maxExtDepth {
		return fmt.Errorf("%s: directories nested deeper than %d", dir, maxExtDepth)
	}
	des, err := w.fs.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading directory /%s: %w", prefix, err)
	}
	names := make([]string, 0, len(des))
	for _, de := range des {
		names = append(names, de.Name())
	}
	sort.Strings(names)
	for i, name := range names {
		if i > 0 && names[i-1] == name {
			return fmt.Errorf("directory /%s lists %q twice", prefix, name)
		}
		if name == "" || strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
			return fmt.Errorf("directory /%s holds an invalid name %q", prefix, name)
		}
		w.n++
		if w.n%256 == 0 {
			if err := w.ctx.Err(); err != nil {
				return err
			}
		}
		rel := path.Join(prefix, name)
		e, ino, err := w.entry(rel)
		if err != nil {
			return fmt.Errorf("/%s: %w", rel, err)
		}
		w.entries = append(w.entries, e)
		switch e.Kind {
		case tree.Dir:
			if w.dirs[ino] {
				return fmt.Errorf("/%s: directory inode %d reached twice: corrupt directory structure", rel, ino)
			}
			w.dirs[ino] = true
			if err := w.walk(rel, rel, depth+1); err != nil {
				return err
			}
		case tree.Regular:
			w.inodes[ino] = append(w.inodes[ino], e)
		}
	}
	return nil
}

func (w *extWalker) entry(p string) (*tree.Entry, uint32, error) {
	fi, err := w.fs.Stat(p)
	if err != nil {
		return nil, 0, err
	}
	st, ok := fi.Sys().(*ext4.StatT)
	if !ok || st == nil {
		return nil, 0, fmt.Errorf("stat returned %T, not *ext4.StatT", fi.Sys())
	}
	m := fi.Mode()
	e := &tree.Entry{
		Path:    p,
		Mode:    uint32(m.Perm()),
		UID:     st.UID,
		GID:     st.GID,
		ModTime: fi.ModTime().UTC(),
	}
	if m&iofs.ModeSetuid != 0 {
		e.Mode |= 0o4000
	}
	if m&iofs.ModeSetgid != 0 {
		e.Mode |= 0o2000
	}
	if m&iofs.ModeSticky != 0 {
		e.Mode |= 0o1000
	}
	switch m.Type() {
	case 0:
		e.Kind, e.Size = tree.Regular, fi.Size()
		if e.Size < 0 || e.Size > w.part.Size {
			return nil, 0, fmt.Errorf("size %d is larger than the partition", e.Size)
		}
		if e.Size == 0 {
			e.Content = tree.Bytes(nil)
		} else {
			e.Content = w.content(p, e.Size)
		}
	case iofs.ModeDir:
		e.Kind = tree.Dir
		if fi.Size() > w.part.Size {
			return nil, 0, fmt.Errorf("directory size %d is larger than the partition", fi.Size())
		}
	case iofs.ModeSymlink:
		e.Kind, e.Linkname = tree.Symlink, st.LinkTarget
		if e.Linkname == "" {
			return nil, 0, fmt.Errorf("symlink of %d bytes with an empty target", fi.Size())
		}
	case iofs.ModeDevice | iofs.ModeCharDevice:
		e.Kind, e.Devmajor, e.Devminor = tree.CharDev, st.Major, st.Minor
	case iofs.ModeDevice:
		e.Kind, e.Devmajor, e.Devminor = tree.BlockDev, st.Major, st.Minor
	case iofs.ModeNamedPipe:
		e.Kind = tree.FIFO
	case iofs.ModeSocket:
		e.Kind = tree.Socket
	default:
		return nil, 0, fmt.Errorf("unknown file type %v", m.Type())
	}
	xa, err := w.fs.GetXattr(p)
	if err != nil {
		return nil, 0, fmt.Errorf("extended attributes: %w", err)
	}
	if len(xa) > 0 {
		e.Xattrs = xa
	}
	return e, st.Ino, nil
}

// content opens the file through go-diskfs each time it is read.
func (w *extWalker) content(p string, size int64) tree.Content {
	fs := w.fs
	name := w.img.name
	return tree.Func(func() (io.ReadCloser, error) {
		var f iofs.File
		err := guard(func() error {
			var err error
			f, err = fs.OpenFile(p, os.O_RDONLY)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s: opening /%s in the root filesystem: %w", name, p, err)
		}
		return &guardedFile{f: f, name: name, path: p, left: size}, nil
	})
}

// guardedFile reads a go-diskfs file, turning its panics into errors and checking that the
// content has exactly the size the inode states.
type guardedFile struct {
	f          iofs.File
	name, path string
	left       int64
}

func (g *guardedFile) Read(b []byte) (n int, err error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > g.left {
		b = b[:g.left]
	}
	err = guard(func() error {
		var err error
		n, err = g.f.Read(b)
		return err
	})
	g.left -= int64(n)
	if errors.Is(err, io.EOF) {
		if g.left > 0 {
			return n, fmt.Errorf("%s: /%s: %w", g.name, g.path, io.ErrUnexpectedEOF)
		}
		return n, io.EOF
	}
	if err != nil {
		return n, fmt.Errorf("%s: reading /%s: %w", g.name, g.path, err)
	}
	if n == 0 {
		return 0, fmt.Errorf("%s: reading /%s: no progress", g.name, g.path)
	}
	return n, nil
}

func (g *guardedFile) Close() error { return g.f.Close() }

// build turns the collected entries into a tree, making every name of a multiply linked
// inode after the first (in path order) a hard link to it.
func (w *extWalker) build() (*tree.Tree, error) {
	for _, es := range w.inodes {
		if len(es) < 2 {
			continue
		}
		sort.Slice(es, func(i, j int) bool { return pathLess(es[i].Path, es[j].Path) })
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

// pathLess orders paths component by component, as tree.Walk does.
func pathLess(a, b string) bool {
	return strings.ReplaceAll(a, "/", "\x00") < strings.ReplaceAll(b, "/", "\x00")
}
