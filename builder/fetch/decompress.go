package fetch

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Format is the compression of an input, as recognised by its magic bytes.
type Format string

// Formats recognised by Detect.
const (
	Raw   Format = "raw"   // not compressed (or not recognised): used as is
	XZ    Format = "xz"    // xz (LZMA2), as Raspberry Pi OS images are published
	Zstd  Format = "zstd"  // Zstandard, including streams starting with a skippable frame
	Gzip  Format = "gzip"  // gzip (DEFLATE)
	Bzip2 Format = "bzip2" // bzip2
	Zip   Format = "zip"   // zip archive: recognised only to be rejected with a clear error
)

// MagicLen is the number of leading bytes Detect needs to recognise every format.
const MagicLen = 6

// Detect returns the compression format that the leading bytes b announce. Fewer than
// MagicLen bytes are fine; anything unrecognised is Raw.
func Detect(b []byte) Format {
	switch {
	case bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return XZ
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	case len(b) >= 4 && b[0]&0xf0 == 0x50 && b[1] == 0x2a && b[2] == 0x4d && b[3] == 0x18:
		return Zstd // skippable frame (magic 0x184D2A5?)
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b, 0x08}):
		return Gzip
	case len(b) >= 4 && b[0] == 'B' && b[1] == 'Z' && b[2] == 'h' && b[3] >= '1' && b[3] <= '9':
		return Bzip2
	case bytes.HasPrefix(b, []byte{'P', 'K', 0x03, 0x04}):
		return Zip
	}
	return Raw
}

// NewReader detects the compression of r from its magic bytes and returns a reader of the
// decompressed bytes (r itself, buffered, for Raw). Close releases the decoder; it does not
// close r. Zip archives are an error.
func NewReader(r io.Reader) (io.ReadCloser, Format, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, err := br.Peek(MagicLen)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, "", err
	}
	f := Detect(head)
	rc, err := newDecoder(f, br)
	if err != nil {
		return nil, f, err
	}
	return rc, f, nil
}

func newDecoder(f Format, r io.Reader) (io.ReadCloser, error) {
	switch f {
	case Raw:
		return io.NopCloser(r), nil
	case XZ:
		zr, err := xz.NewReader(r)
		if err != nil {
			return nil, decodeError(f, err)
		}
		return io.NopCloser(zr), nil
	case Zstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderMaxMemory(4<<30))
		if err != nil {
			return nil, decodeError(f, err)
		}
		return zr.IOReadCloser(), nil
	case Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, decodeError(f, err)
		}
		return zr, nil
	case Bzip2:
		return io.NopCloser(bzip2.NewReader(r)), nil
	case Zip:
		return nil, errors.New("zip archives are not supported: extract the image first")
	}
	return nil, fmt.Errorf("unknown format %q", f)
}

// decodeError says whether a decoder error means the stream ended early or is corrupt.
func decodeError(f Format, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("truncated %s stream: %w", f, err)
	}
	return fmt.Errorf("corrupt %s stream: %w", f, err)
}

// ctxReader fails reads once ctx is done, so long copies honour cancellation.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.r.Read(p)
}

const (
	sparseBlock = 64 << 10 // all-zero blocks of this size are left as holes
	copyBuffer  = 16 * sparseBlock
)

var zeroBlock [sparseBlock]byte

// errTooLarge is returned by writeSparse when r yields more than limit bytes.
var errTooLarge = errors.New("decompressed size exceeds the limit")

// writeSparse copies r into the empty file f, leaving every all-zero, block-aligned 64 KiB
// block as a hole, and sets the file's size at the end. Every byte of r goes to sum.
// It returns the number of bytes copied.
func writeSparse(f *os.File, r io.Reader, sum io.Writer, limit int64) (int64, error) {
	buf := make([]byte, copyBuffer)
	var off int64
	for {
		n, rerr := fill(r, buf)
		if n > 0 {
			if off+int64(n) > limit {
				return off, errTooLarge
			}
			_, _ = sum.Write(buf[:n])
			if err := writeNonZero(f, buf[:n], off); err != nil {
				return off, err
			}
			off += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return off, rerr
		}
	}
	if err := f.Truncate(off); err != nil {
		return off, err
	}
	return off, nil
}

// fill reads into buf until it is full or r returns an error (io.EOF at the end).
func fill(r io.Reader, buf []byte) (int, error) {
	n, empty := 0, 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m > 0 {
			empty = 0
		} else if empty++; empty >= 100 {
			return n, io.ErrNoProgress
		}
	}
	return n, nil
}

// writeNonZero writes b at off, skipping 64 KiB blocks that are entirely zero and
// coalescing runs of non-zero blocks into one write. off is a multiple of sparseBlock.
func writeNonZero(f *os.File, b []byte, off int64) error {
	start := -1 // start of the pending run of non-zero blocks
	for i := 0; i < len(b); i += sparseBlock {
		end := min(i+sparseBlock, len(b))
		zero := bytes.Equal(b[i:end], zeroBlock[:end-i])
		if !zero && start < 0 {
			start = i
		}
		if zero && start >= 0 {
			if _, err := f.WriteAt(b[start:i], off+int64(start)); err != nil {
				return err
			}
			start = -1
		}
	}
	if start >= 0 {
		if _, err := f.WriteAt(b[start:], off+int64(start)); err != nil {
			return err
		}
	}
	return nil
}
