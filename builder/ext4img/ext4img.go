package ext4img

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/Microsoft/hcsshim/ext4/tar2ext4"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// BlockSize is the block size of every file system Write makes.
const BlockSize = 4096

// Target is where the file system is written: a disk image file (*os.File) or any other
// random-access store.
type Target interface {
	io.ReaderAt
	io.WriterAt
}

// Options are the identity of the file system Write makes. The zero value is valid but
// anonymous: callers derive UUID from a hash of their inputs, never at random.
type Options struct {
	// Partition names the partition in errors ("system-a"); empty means "ext4".
	Partition string
	// UUID is the file system UUID (s_uuid); it also seeds the directory hash seed.
	UUID [16]byte
	// Label is the volume name (s_volume_name), at most 16 bytes.
	Label string
	// Epoch is the creation, write and last-check time of the file system, and the time of
	// the root directory and of lost+found (the tree holds neither). The zero value means
	// the Unix epoch.
	Epoch time.Time
}

// Info describes a written file system.
type Info struct {
	// Size is the number of bytes the file system occupies from the offset (Blocks*BlockSize).
	Size int64
	// Blocks is the block count of the file system, in BlockSize blocks.
	Blocks uint32
	// Inodes is the number of inodes in use, reserved inodes included.
	Inodes uint32
	// Skipped lists the tree paths that ext4 images made from a tar stream cannot hold
	// (sockets); they are left out.
	Skipped []string
}

// ErrTooSmall is wrapped by the error Write returns when the file system does not fit.
var ErrTooSmall = errors.New("file system does not fit")

// minTime and maxTime bound the times ext4 with 256-byte inodes can store.
var (
	minTime = time.Unix(-1<<31, 0)
	maxTime = time.Unix(0x37fffffff, 999999999)
)

// Write writes t as an ext4 file system into dst at byte offset off, using at most max
// bytes. The file system is compact (no free blocks, no journal) and marked read-only
// (RO_COMPAT_READONLY): the kernel mounts it read-only only. The bytes in [off, off+max)
// past the file system are left as they are; nothing outside that window is written. The
// output depends only on t and o, so writing the same tree twice gives identical bytes.
//
// When the file system would exceed max, Write finishes laying it out without writing
// past the window, then returns an error wrapping ErrTooSmall that names the partition and
// gives the bytes needed and available.
func Write(ctx context.Context, t *tree.Tree, dst Target, off, max int64, o Options) (Info, error) {
	name := o.Partition
	if name == "" {
		name = "ext4"
	}
	if err := checkOptions(t, o); err != nil {
		return Info{}, fmt.Errorf("partition %s: %w", name, err)
	}
	if off < 0 || max < 2*BlockSize {
		return Info{}, fmt.Errorf("partition %s: invalid window: offset %d, size %d", name, off, max)
	}
	win := &window{dst: dst, off: off, max: max}
	skipped, err := convert(ctx, t, win)
	if err != nil {
		return Info{}, fmt.Errorf("partition %s: writing ext4: %w", name, err)
	}
	if win.high > max {
		return Info{}, fmt.Errorf("partition %s: %w: needs %d bytes (%d MiB), partition has %d bytes (%d MiB)",
			name, ErrTooSmall, win.high, ceilMiB(win.high), max, max/(1<<20))
	}
	info, err := fixup(io.NewSectionReader(dst, off, max), offsetWriter{dst, off}, win.high, o, t.Get("lost+found") == nil)
	if err != nil {
		return Info{}, fmt.Errorf("partition %s: %w", name, err)
	}
	if info.Size != win.high {
		return Info{}, fmt.Errorf("partition %s: file system has %d bytes but %d were written", name, info.Size, win.high)
	}
	info.Skipped = skipped
	return info, nil
}

func ceilMiB(n int64) int64 { return (n + 1<<20 - 1) >> 20 }

func checkOptions(t *tree.Tree, o Options) error {
	if len(o.Label) > 16 {
		return fmt.Errorf("label %q is %d bytes, ext4 allows 16", o.Label, len(o.Label))
	}
	if !o.Epoch.IsZero() && (o.Epoch.Before(time.Unix(0, 0)) || o.Epoch.After(time.Unix(1<<40-1, 0))) {
		return fmt.Errorf("epoch %s is outside what a superblock holds", o.Epoch.UTC())
	}
	// compactext4 stores times before 1901-12-13 as that date, which is indistinguishable
	// from one in 2038 once encoded (see fixTime); ext4 cannot hold them anyway.
	return t.Walk(func(e *tree.Entry) error {
		if e.ModTime.Before(minTime) || e.ModTime.After(maxTime) {
			return fmt.Errorf("%s: mtime %s is outside the range ext4 stores (1901-12-13 to 2446-05-10)", e.Path, e.ModTime.UTC())
		}
		return nil
	})
}

// convert streams the tree as tar into tar2ext4 writing through win.
func convert(ctx context.Context, t *tree.Tree, win *window) (skipped []string, err error) {
	p := newBufPipe(1<<20, 8)
	done := make(chan error, 1)
	go func() {
		s, err := t.WriteTar(ctxWriter{ctx, p})
		skipped = s
		p.CloseWithError(err)
		done <- err
	}()
	// compactext4 reserves group descriptor blocks for MaximumDiskSize and stops writing
	// past it. The window drops what falls beyond max instead, so the layout runs to its end
	// and win.high is the size the file system needs; 16 GiB (its default, one descriptor
	// block) unless the window is larger.
	maxDisk := max(win.max, 16<<30)
	cerr := tar2ext4.ConvertTarToExt4(p, win, tar2ext4.MaximumDiskSize(maxDisk))
	p.CloseRead(io.ErrClosedPipe)
	werr := <-done
	if werr != nil && !errors.Is(werr, io.ErrClosedPipe) {
		// The tree's error (a missing content file, a cancelled context) explains the
		// converter's "unexpected EOF" better than the converter does.
		return skipped, werr
	}
	return skipped, cerr
}

// ctxWriter stops the tar stream when ctx is cancelled.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// window is the io.ReadWriteSeeker tar2ext4 writes to: bytes [0, max) map to
// [off, off+max) of dst; writes past max are counted in high but dropped, and reads there
// return zeros.
type window struct {
	dst       Target
	off, max  int64
	pos, high int64
}

func (w *window) Write(p []byte) (int, error) {
	n := len(p)
	if w.pos < w.max {
		q := p
		if int64(len(q)) > w.max-w.pos {
			q = q[:w.max-w.pos]
		}
		if _, err := w.dst.WriteAt(q, w.off+w.pos); err != nil {
			return 0, err
		}
	}
	w.pos += int64(n)
	if w.pos > w.high {
		w.high = w.pos
	}
	return n, nil
}

func (w *window) Read(p []byte) (int, error) {
	n := 0
	if w.pos < w.max {
		q := p
		if int64(len(q)) > w.max-w.pos {
			q = q[:w.max-w.pos]
		}
		m, err := w.dst.ReadAt(q, w.off+w.pos)
		n = m
		if err != nil && !(errors.Is(err, io.EOF) && m == len(q)) {
			if !errors.Is(err, io.EOF) {
				return n, err
			}
			// Past the end of the file: the bytes were never written, so they are zeros.
			clear(q[m:])
			n = len(q)
		}
	}
	clear(p[n:])
	w.pos += int64(len(p))
	return len(p), nil
}

func (w *window) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += w.pos
	case io.SeekEnd:
		offset += w.high
	default:
		return 0, fmt.Errorf("seek: invalid whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek: negative position %d", offset)
	}
	w.pos = offset
	return offset, nil
}

// offsetWriter writes at off+p of dst.
type offsetWriter struct {
	dst Target
	off int64
}

func (o offsetWriter) WriteAt(p []byte, at int64) (int, error) { return o.dst.WriteAt(p, o.off+at) }
