package ext4img

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// mem is an in-memory Target.
type mem []byte

func (m mem) ReadAt(b []byte, off int64) (int, error) {
	if off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(b, m[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (m mem) WriteAt(b []byte, off int64) (int, error) {
	if off+int64(len(b)) > int64(len(m)) {
		return 0, errors.New("write past the end")
	}
	return copy(m[off:], b), nil
}

// FuzzFixup feeds damaged file systems to the fix-up pass: it must return an error or
// succeed, never panic or run away with memory.
func FuzzFixup(f *testing.F) {
	tr := tree.New()
	for _, e := range []*tree.Entry{
		{Path: "etc/hostname", Kind: tree.Regular, Mode: 0o644, Size: 3, Content: tree.Bytes("pi\n"), ModTime: t2040},
		{Path: "etc/x", Kind: tree.Regular, Mode: 0o644, ModTime: t2000, Xattrs: map[string][]byte{}},
	} {
		for _, k := range manyXattrs {
			if e.Xattrs != nil {
				e.Xattrs[k] = []byte(k)
			}
		}
		if err := tr.Put(e); err != nil {
			f.Fatal(err)
		}
	}
	m := make(mem, 8*MiB)
	info, err := Write(context.Background(), tr, m, 0, int64(len(m)), Options{Epoch: epoch})
	if err != nil {
		f.Fatal(err)
	}
	// The seed is the image without its trailing zeros, which the fuzz body restores.
	seed := bytes.TrimRight(m[:info.Size], "\x00")
	f.Add(seed, info.Size)
	f.Add(seed[:2048], info.Size)
	f.Fuzz(func(t *testing.T, img []byte, size int64) {
		if size <= 0 || size > 4*MiB || int64(len(img)) > size {
			return
		}
		m := make(mem, size)
		copy(m, img)
		_, _ = fixup(m, m, size, Options{}, true)
	})
}

func TestBufPipe(t *testing.T) {
	p := newBufPipe(7, 3)
	var want bytes.Buffer
	go func() {
		for i := 0; i < 1000; i++ {
			s := strings.Repeat(string(rune('a'+i%26)), i%17)
			want.WriteString(s)
			if _, err := p.Write([]byte(s)); err != nil {
				p.CloseWithError(err)
				return
			}
		}
		p.CloseWithError(errors.New("producer done"))
	}()
	got, err := io.ReadAll(p)
	if err == nil || err.Error() != "producer done" {
		t.Errorf("error %v, want the writer's", err)
	}
	if got := string(got); got != want.String() {
		t.Errorf("got %d bytes, want %d (or different content)", len(got), want.Len())
	}

	// A reader that stops releases the writer.
	p = newBufPipe(4, 2)
	p.CloseRead(io.ErrClosedPipe)
	if _, err := p.Write(make([]byte, 100)); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("write after CloseRead: %v", err)
	}

	// A clean close gives io.EOF after the data.
	p = newBufPipe(4, 2)
	go func() { p.Write([]byte("abc")); p.CloseWithError(nil) }()
	if b, err := io.ReadAll(p); err != nil || string(b) != "abc" {
		t.Errorf("got %q, %v", b, err)
	}
}
