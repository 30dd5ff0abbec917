package output

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ZstdConcurrency is the fixed number of zstd encoder goroutines. klauspost/compress
// compresses a stream on several cores only with WithConcurrentBlocks, and then its output
// depends on the concurrency setting (1 gives another stream than 2 or more), by default
// GOMAXPROCS: fixing it makes .img.zst byte-identical on machines with any number of cores.
const ZstdConcurrency = 4

// Compressions the builder supports (spec output.compress).
const (
	None = "none"
	Zstd = "zstd"
	XZ   = "xz"
)

// Ext returns the file extension for a compression ("" for none).
func Ext(kind string) string {
	switch kind {
	case Zstd:
		return ".zst"
	case XZ:
		return ".xz"
	}
	return ""
}

// Compress writes src compressed with kind to dst atomically (a temporary name in dst's
// directory, renamed at the end), and returns dst's sha256. progress, if not nil, is called
// with the number of input bytes consumed so far.
func Compress(ctx context.Context, src, dst, kind string, progress func(int64)) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	return AtomicWrite(dst, func(w io.Writer) error {
		var cw io.WriteCloser
		switch kind {
		case Zstd:
			cw, err = zstd.NewWriter(w, zstd.WithEncoderConcurrency(ZstdConcurrency),
				zstd.WithConcurrentBlocks(true), zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithWindowSize(8<<20))
		case XZ:
			cw, err = xz.NewWriter(w)
		default:
			return fmt.Errorf("unknown compression %q", kind)
		}
		if err != nil {
			return err
		}
		r := io.Reader(&ctxReader{ctx: ctx, r: in, progress: progress})
		if _, err := io.Copy(cw, bufio.NewReaderSize(r, 1<<20)); err != nil {
			cw.Close()
			return fmt.Errorf("compressing %s: %w", src, err)
		}
		return cw.Close()
	})
}

type ctxReader struct {
	ctx      context.Context
	r        io.Reader
	n        int64
	progress func(int64)
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(c.n)
	}
	return n, err
}

// AtomicWrite creates path by writing a temporary file beside it with fn, syncing it and
// renaming it into place; on any error the temporary file is removed and path is untouched.
// It returns the sha256 of what was written.
func AtomicWrite(path string, fn func(io.Writer) error) (sum string, err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if err = fn(bw); err != nil {
		return "", err
	}
	if err = bw.Flush(); err != nil {
		return "", err
	}
	if err = f.Chmod(0o644); err != nil {
		return "", err
	}
	if err = f.Sync(); err != nil {
		return "", err
	}
	if err = f.Close(); err != nil {
		return "", err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// SHA256File returns the hex sha256 of a file's content.
func SHA256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// SHA256Sums formats sums (file base name → hex sha256) in the format `sha256sum -c` reads,
// sorted by name.
func SHA256Sums(sums map[string]string) []byte {
	names := make([]string, 0, len(sums))
	for n := range sums {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s  %s\n", sums[n], n)
	}
	return []byte(b.String())
}
