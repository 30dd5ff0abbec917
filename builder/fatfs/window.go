package fatfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"

	"github.com/diskfs/go-diskfs/backend"
)

// window is the go-diskfs backend for one partition: offsets are relative to the partition
// start and writes outside it are refused. The metadata area (reserved sectors and both
// FATs, which go-diskfs rewrites whole on every cluster allocation) is held in memory and
// written once by finish; contiguous data writes (go-diskfs writes file data one cluster
// at a time) are gathered into large writes.
type window struct {
	f         *os.File
	off, size int64
	meta      []byte // bytes [0, len(meta)) of the window

	pending   []byte // data not yet written, starting at pendingAt
	pendingAt int64
}

const pendingMax = 4 << 20

var (
	_ backend.Storage      = (*window)(nil)
	_ backend.WritableFile = (*window)(nil)
)

func newWindow(f *os.File, off, size, metaSize int64) *window {
	return &window{f: f, off: off, size: size, meta: make([]byte, metaSize), pending: make([]byte, 0, pendingMax)}
}

func (w *window) check(n int, at int64) error {
	if at < 0 || at+int64(n) > w.size {
		return fmt.Errorf("access to bytes %d-%d outside the %d-byte partition", at, at+int64(n), w.size)
	}
	return nil
}

// ReadAt reads the partition; bytes past the end of the image file read as zero.
func (w *window) ReadAt(p []byte, at int64) (int, error) {
	if err := w.check(len(p), at); err != nil {
		return 0, err
	}
	if err := w.flush(); err != nil {
		return 0, err
	}
	n := 0
	if at < int64(len(w.meta)) {
		n = copy(p, w.meta[at:])
	}
	if n < len(p) {
		m, err := w.f.ReadAt(p[n:], w.off+at+int64(n))
		if err != nil && !errors.Is(err, io.EOF) {
			return n + m, err
		}
		clear(p[n+m:])
	}
	return len(p), nil
}

// WriteAt writes the partition.
func (w *window) WriteAt(p []byte, at int64) (int, error) {
	if err := w.check(len(p), at); err != nil {
		return 0, err
	}
	total := len(p)
	if at < int64(len(w.meta)) {
		n := copy(w.meta[at:], p)
		p, at = p[n:], at+int64(n)
	}
	if len(p) == 0 {
		return total, nil
	}
	if len(w.pending) > 0 && at == w.pendingAt+int64(len(w.pending)) && len(w.pending)+len(p) <= pendingMax {
		w.pending = append(w.pending, p...)
		return total, nil
	}
	if err := w.flush(); err != nil {
		return 0, err
	}
	if len(p) >= pendingMax {
		if _, err := w.f.WriteAt(p, w.off+at); err != nil {
			return 0, err
		}
		return total, nil
	}
	w.pending = append(w.pending, p...)
	w.pendingAt = at
	return total, nil
}

func (w *window) flush() error {
	if len(w.pending) == 0 {
		return nil
	}
	_, err := w.f.WriteAt(w.pending, w.off+w.pendingAt)
	w.pending = w.pending[:0]
	return err
}

// finish writes the pending data and the metadata area. All-zero blocks of metadata are
// only written where the image does not already read as zero, so the image stays sparse.
func (w *window) finish() error {
	if err := w.flush(); err != nil {
		return err
	}
	const block = 4096
	zero := make([]byte, block)
	old := make([]byte, block)
	for at := 0; at < len(w.meta); at += block {
		b := w.meta[at:min(at+block, len(w.meta))]
		if bytes.Equal(b, zero[:len(b)]) {
			n, err := w.f.ReadAt(old[:len(b)], w.off+int64(at))
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if bytes.Equal(old[:n], zero[:n]) {
				continue
			}
		}
		if _, err := w.f.WriteAt(b, w.off+int64(at)); err != nil {
			return err
		}
	}
	return nil
}

// The rest of backend.Storage; go-diskfs's FAT32 code only uses ReadAt and WriteAt.

func (w *window) Stat() (iofs.FileInfo, error)            { return w.f.Stat() }
func (w *window) Read([]byte) (int, error)                { return 0, errors.ErrUnsupported }
func (w *window) Seek(int64, int) (int64, error)          { return 0, errors.ErrUnsupported }
func (w *window) Close() error                            { return nil }
func (w *window) Sys() (*os.File, error)                  { return nil, errors.ErrUnsupported }
func (w *window) Writable() (backend.WritableFile, error) { return w, nil }
func (w *window) Path() string                            { return "" }
