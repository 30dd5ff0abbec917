package tree

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// Kind is the type of a tree entry.
type Kind uint8

// The kinds of entries a root filesystem holds.
const (
	Regular Kind = iota
	Dir
	Symlink
	Hardlink // another name for the regular file at Linkname
	CharDev
	BlockDev
	FIFO
	Socket
)

var kindNames = [...]string{"file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo", "socket"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Content opens the bytes of a regular file. Implementations must be safe to call more than once.
type Content interface {
	Open() (io.ReadCloser, error)
}

// Entry is one file, directory, link or special file of the tree, with full metadata.
type Entry struct {
	// Path is slash-separated and relative to the root, without a leading slash ("etc/passwd").
	Path string
	Kind Kind
	// Mode holds the permission bits and setuid/setgid/sticky (07777), not the file type.
	Mode               uint32
	UID, GID           uint32
	ModTime            time.Time
	Size               int64  // regular files only
	Linkname           string // symlink target, or for a Hardlink the Path of the file it names
	Devmajor, Devminor uint32
	Xattrs             map[string][]byte
	Content            Content // regular files only
}

// Tree is a root filesystem under construction. The zero value is not usable; call New.
type Tree struct {
	entries map[string]*Entry
}

// New returns an empty tree holding only the root directory.
func New() *Tree {
	return &Tree{entries: map[string]*Entry{}}
}

// Clean normalises p to the tree's path form ("/etc//x/" → "etc/x"); the root is "".
func Clean(p string) string {
	p = path.Clean("/" + p)
	return strings.TrimPrefix(p, "/")
}

// Len is the number of entries, the root excluded.
func (t *Tree) Len() int { return len(t.entries) }

// Get returns the entry at p, or nil.
func (t *Tree) Get(p string) *Entry { return t.entries[Clean(p)] }

// Put adds e, replacing whatever was at its path. A directory replacing a directory keeps the
// children; anything else replacing a directory removes them. Missing parent directories are
// created as root:root 0755 with e's mtime. A regular file that other entries hard-link to is
// replaced only in name: the first link becomes the file.
func (t *Tree) Put(e *Entry) error {
	e.Path = Clean(e.Path)
	if e.Path == "" {
		return errors.New("tree: cannot replace the root directory")
	}
	if err := validate(e); err != nil {
		return fmt.Errorf("tree: %s: %w", e.Path, err)
	}
	if e.Kind == Hardlink {
		e.Linkname = Clean(e.Linkname)
		tgt := t.entries[e.Linkname]
		if tgt == nil || tgt.Kind != Regular {
			return fmt.Errorf("tree: %s: hard link to %s, which is not a regular file in the tree", e.Path, e.Linkname)
		}
		if e.Linkname == e.Path {
			return fmt.Errorf("tree: %s: hard link to itself", e.Path)
		}
	}
	if err := t.mkdirAll(path.Dir(e.Path), e.ModTime); err != nil {
		return err
	}
	if old := t.entries[e.Path]; old != nil {
		if old.Kind == Dir && e.Kind == Dir {
			t.entries[e.Path] = e
			return nil
		}
		t.remove(e.Path)
	}
	t.entries[e.Path] = e
	return nil
}

func validate(e *Entry) error {
	if e.Mode&^07777 != 0 {
		return fmt.Errorf("mode %o has bits outside 07777", e.Mode)
	}
	switch e.Kind {
	case Regular:
		if e.Content == nil && e.Size != 0 {
			return errors.New("regular file with a size but no content")
		}
	case Symlink:
		if e.Linkname == "" {
			return errors.New("symlink without a target")
		}
	case Dir, Hardlink, CharDev, BlockDev, FIFO, Socket:
	default:
		return fmt.Errorf("unknown kind %d", e.Kind)
	}
	return nil
}

// MkdirAll creates p and its missing parents as root:root 0755 directories with mtime mt.
func (t *Tree) MkdirAll(p string, mt time.Time) error { return t.mkdirAll(Clean(p), mt) }

func (t *Tree) mkdirAll(p string, mt time.Time) error {
	if p == "" || p == "." {
		return nil
	}
	if e := t.entries[p]; e != nil {
		if e.Kind == Dir {
			return nil
		}
		if e.Kind == Symlink {
			return fmt.Errorf("tree: %s is a symlink to %s, not a directory: refusing to write through it", p, e.Linkname)
		}
		return fmt.Errorf("tree: %s is a %s, not a directory", p, e.Kind)
	}
	if err := t.mkdirAll(path.Dir(p), mt); err != nil {
		return err
	}
	t.entries[p] = &Entry{Path: p, Kind: Dir, Mode: 0o755, ModTime: mt}
	return nil
}

// Remove deletes p and everything below it. Removing a missing path is not an error.
func (t *Tree) Remove(p string) { t.remove(Clean(p)) }

func (t *Tree) remove(p string) {
	e := t.entries[p]
	if e == nil {
		return
	}
	if e.Kind == Dir {
		prefix := p + "/"
		for k := range t.entries {
			if strings.HasPrefix(k, prefix) {
				t.unlink(k)
			}
		}
	}
	t.unlink(p)
}

// unlink removes a single entry, promoting a hard link when the file it names goes away.
func (t *Tree) unlink(p string) {
	e := t.entries[p]
	if e == nil {
		return
	}
	delete(t.entries, p)
	if e.Kind != Regular {
		return
	}
	var links []string
	for k, o := range t.entries {
		if o.Kind == Hardlink && o.Linkname == p {
			links = append(links, k)
		}
	}
	if len(links) == 0 {
		return
	}
	sort.Strings(links)
	heir := t.entries[links[0]]
	promoted := *e
	promoted.Path = heir.Path
	t.entries[heir.Path] = &promoted
	for _, k := range links[1:] {
		t.entries[k].Linkname = heir.Path
	}
}

// Walk calls fn for every entry in a stable order: sorted by path, so a directory comes before
// its children. A hard link's target always comes before the link (Put keeps targets that way
// by construction; Walk reorders when a link sorts first). fn's error stops the walk.
func (t *Tree) Walk(fn func(*Entry) error) error {
	keys := make([]string, 0, len(t.entries))
	for k := range t.entries {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return PathLess(keys[i], keys[j]) })
	emitted := make(map[string]bool, len(keys))
	var deferred map[string][]*Entry
	for _, k := range keys {
		e := t.entries[k]
		if e.Kind == Hardlink && !emitted[e.Linkname] {
			if deferred == nil {
				deferred = map[string][]*Entry{}
			}
			deferred[e.Linkname] = append(deferred[e.Linkname], e)
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
		emitted[k] = true
		for _, l := range deferred[k] {
			if err := fn(l); err != nil {
				return err
			}
		}
		delete(deferred, k)
	}
	return nil
}

// PathLess orders paths component by component, so "a/b" < "a-b" and parents precede
// children: '/' sorts before every other byte. It does not allocate.
func PathLess(a, b string) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if ca, cb := a[i], b[i]; ca != cb {
			if ca == '/' {
				return true
			}
			if cb == '/' {
				return false
			}
			return ca < cb
		}
	}
	return len(a) < len(b)
}

// ReadFile returns the whole content of the regular file (or hard link to one) at p.
func (t *Tree) ReadFile(p string) ([]byte, error) {
	e := t.entries[Clean(p)]
	if e != nil && e.Kind == Hardlink {
		e = t.entries[e.Linkname]
	}
	if e == nil || e.Kind != Regular {
		return nil, fmt.Errorf("tree: %s: %w", p, fs.ErrNotExist)
	}
	if e.Content == nil {
		return nil, nil
	}
	rc, err := e.Content.Open()
	if err != nil {
		return nil, fmt.Errorf("tree: opening %s: %w", p, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("tree: reading %s: %w", p, err)
	}
	return b, nil
}

// Bytes is content held in memory; use it for small generated files only.
type Bytes []byte

// Open implements Content.
func (b Bytes) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }

// File is content read from a file on the host when the tree is written.
type File string

// Open implements Content.
func (f File) Open() (io.ReadCloser, error) { return os.Open(string(f)) }

// Section is content at an offset of a larger file (a cached tar, a raw disk image).
type Section struct {
	R      io.ReaderAt
	Offset int64
	Size   int64
}

// Open implements Content.
func (s Section) Open() (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(s.R, s.Offset, s.Size)), nil
}

// Func adapts a function to Content.
type Func func() (io.ReadCloser, error)

// Open implements Content.
func (f Func) Open() (io.ReadCloser, error) { return f() }

// WriteFile puts a regular file with generated content at p.
func (t *Tree) WriteFile(p string, data []byte, mode uint32, mt time.Time) error {
	return t.Put(&Entry{Path: p, Kind: Regular, Mode: mode, ModTime: mt, Size: int64(len(data)), Content: Bytes(data)})
}

// Symlink puts a symbolic link at p pointing to target.
func (t *Tree) Symlink(target, p string, mt time.Time) error {
	return t.Put(&Entry{Path: p, Kind: Symlink, Mode: 0o777, ModTime: mt, Linkname: target})
}
