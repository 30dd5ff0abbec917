package fetch

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Cache is a content-addressed cache of downloads and decompressed images. Its layout:
//
//	Dir/blobs/sha256/<hex>        verified downloads, named by the sha256 of their bytes
//	Dir/downloads/<key>.partial   downloads in progress (resumed by the next attempt)
//	Dir/raw/<hex>.img             decompressed images, named by the sha256 of the compressed file
//	Dir/raw/<hex>.img.json        the decompressed image's own sha256 and size
//	Dir/locks/                    lock files that serialise work on one item across processes
//	Dir/localsums/<key>.json      sha256 of local base images, reused while a file is unchanged
//
// Files appear in blobs/ and raw/ only by an atomic rename of a complete, verified file, so
// several builds may share one cache at the same time.
type Cache struct {
	// Dir is the cache's root directory; it is created when first needed.
	Dir string
}

// DefaultCacheDir returns $XDG_CACHE_HOME/edgeimg, or ~/.cache/edgeimg when XDG_CACHE_HOME is
// unset or not absolute.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "edgeimg"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the cache directory: %w", err)
	}
	return filepath.Join(home, ".cache", "edgeimg"), nil
}

// Result describes a base image ready to read as a raw disk image.
type Result struct {
	// RawPath is the raw (decompressed) image: in the cache for a compressed or downloaded
	// source, or the source path itself for an uncompressed local file. Treat it as read-only.
	RawPath string
	// SourceSHA256 is the sha256 (lower-case hex) of the source as given, compressed bytes
	// included; it is what a lock file pins.
	SourceSHA256 string
	// RawSHA256 is the sha256 of the raw image (equal to SourceSHA256 when not compressed).
	RawSHA256 string
	// Size is the raw image's size in bytes.
	Size int64
	// Format is the compression the source was found to have, from its magic bytes.
	Format Format
}

// Base brings the base image src (a local path, a file:// URL or an http(s) URL) into the
// cache and returns its raw image. sha256hex, when not empty, is the sha256 the source file
// must have (compressed bytes, as published); it is required to trust a cached download
// without any network access. A compressed source (xz, zstd, gzip or bzip2, recognised by its
// magic bytes whatever its name) is decompressed once into Dir/raw, sparsely.
func (c *Cache) Base(ctx context.Context, src, sha256hex string, opts ...Option) (*Result, error) {
	if c.Dir == "" {
		return nil, errors.New("cache directory not set")
	}
	o := newOptions(opts)
	want, err := parseSHA256(sha256hex)
	if err != nil {
		return nil, fmt.Errorf("base image %s: %w", src, err)
	}

	// 1. Get the source file and its sha256.
	var path, srcSum string
	if u, ok := httpURL(src); ok {
		path, err = c.download(ctx, u, want, o)
		if err != nil {
			return nil, err
		}
		srcSum = filepath.Base(path)
	} else {
		path = localPath(src)
		srcSum, err = c.hashLocal(ctx, path, o)
		if err != nil {
			return nil, err
		}
		if want != "" && srcSum != want {
			return nil, fmt.Errorf("base image %s: sha256 mismatch: expected %s, got %s", path, want, srcSum)
		}
	}

	// 2. Recognise its compression.
	format, size, err := detectFile(path)
	if err != nil {
		return nil, err
	}
	if ext := extFormat(path); ext != "" && ext != format {
		o.log.Warn("base image content does not match its name", "path", path, "name_says", ext, "content_is", format)
	}

	// 3. Use a raw image in place, or decompress it into the cache.
	if format == Raw {
		if size == 0 {
			return nil, fmt.Errorf("base image %s is empty", path)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("base image %s: %w", path, err)
		}
		return &Result{RawPath: abs, SourceSHA256: srcSum, RawSHA256: srcSum, Size: size, Format: Raw}, nil
	}
	return c.decompress(ctx, path, srcSum, format, o)
}

// rawMeta is stored beside a decompressed image.
type rawMeta struct {
	SourceSHA256 string `json:"source_sha256"`
	Format       Format `json:"format"`
	RawSHA256    string `json:"raw_sha256"`
	Size         int64  `json:"size"`
}

// decompress writes the raw image of the compressed file path (whose sha256 is srcSum) to
// Dir/raw/<srcSum>.img, unless it is already there.
func (c *Cache) decompress(ctx context.Context, path, srcSum string, format Format, o *options) (*Result, error) {
	rawDir := filepath.Join(c.Dir, "raw")
	final := filepath.Join(rawDir, srcSum+".img")
	if r, ok := cachedRaw(final, srcSum); ok {
		o.log.Debug("using cached raw image", "path", final)
		return r, nil
	}
	if err := c.mkdirs(rawDir); err != nil {
		return nil, err
	}
	unlock, err := lockFile(ctx, c.lockPath("raw-"+srcSum))
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r, ok := cachedRaw(final, srcSum); ok { // another build finished it while we waited
		return r, nil
	}

	in, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(rawDir, srcSum+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("creating raw image: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()

	o.progress.Start("decompressing "+filepath.Base(path), st.Size())
	defer o.progress.Done()
	srcHash := sha256.New()
	br := bufio.NewReaderSize(io.TeeReader(ctxReader{ctx, in}, io.MultiWriter(srcHash, progressWriter{o.progress})), 1<<20)
	dec, err := newDecoder(format, br)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("decompressing %s: %w", path, context.Cause(ctx))
		}
		return nil, fmt.Errorf("decompressing %s: %w", path, err)
	}
	defer dec.Close()
	rawHash := sha256.New()
	size, err := writeSparse(tmp, readErrors{dec}, rawHash, o.maxRawSize)
	var rerr readError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return nil, fmt.Errorf("decompressing %s: %w", path, context.Cause(ctx))
	case errors.Is(err, errTooLarge):
		return nil, fmt.Errorf("decompressing %s: image is larger than the limit of %d bytes", path, o.maxRawSize)
	case errors.As(err, &rerr):
		return nil, fmt.Errorf("decompressing %s: %w", path, decodeError(format, rerr.err))
	default:
		return nil, fmt.Errorf("writing raw image of %s: %w", path, err)
	}
	if size == 0 {
		return nil, fmt.Errorf("decompressing %s: the image is empty", path)
	}
	// Hash whatever the decoder did not read, so the whole file is checked once more: it is
	// what the cached image will be named after.
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if got := hex.EncodeToString(srcHash.Sum(nil)); got != srcSum {
		return nil, fmt.Errorf("reading %s: sha256 was %s while decompressing, %s before: the file changed or is corrupt", path, got, srcSum)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("writing raw image of %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("writing raw image of %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return nil, fmt.Errorf("writing raw image of %s: %w", path, err)
	}
	meta := rawMeta{SourceSHA256: srcSum, Format: format, RawSHA256: hex.EncodeToString(rawHash.Sum(nil)), Size: size}
	mb, _ := json.Marshal(meta)
	if err := writeFileAtomic(final+".json", append(mb, '\n')); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return nil, fmt.Errorf("storing raw image of %s: %w", path, err)
	}
	committed = true
	return &Result{RawPath: final, SourceSHA256: srcSum, RawSHA256: meta.RawSHA256, Size: size, Format: format}, nil
}

// readError marks errors that came from the decoder rather than from writing.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
func (e readError) Unwrap() error { return e.err }

type readErrors struct{ r io.Reader }

func (r readErrors) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = readError{err}
	}
	return n, err
}

// cachedRaw returns the cached raw image final when both it and its metadata are complete.
func cachedRaw(final, srcSum string) (*Result, bool) {
	b, err := os.ReadFile(final + ".json")
	if err != nil {
		return nil, false
	}
	var m rawMeta
	if json.Unmarshal(b, &m) != nil || m.SourceSHA256 != srcSum {
		return nil, false
	}
	st, err := os.Stat(final)
	if err != nil || !st.Mode().IsRegular() || st.Size() != m.Size {
		return nil, false
	}
	return &Result{RawPath: final, SourceSHA256: srcSum, RawSHA256: m.RawSHA256, Size: m.Size, Format: m.Format}, true
}

// hashFile returns the sha256 of the regular file path.
func hashFile(ctx context.Context, path string, o *options) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("base image %s is not a regular file", path)
	}
	o.progress.Start("checking "+filepath.Base(path), st.Size())
	defer o.progress.Done()
	h := sha256.New()
	if _, err := io.CopyBuffer(io.MultiWriter(h, progressWriter{o.progress}), ctxReader{ctx, f}, make([]byte, 1<<20)); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("checking %s: %w", path, context.Cause(ctx))
		}
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// detectFile reads the magic bytes of path.
func detectFile(path string) (Format, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, fmt.Errorf("reading %s: %w", path, err)
	}
	head := make([]byte, MagicLen)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return "", 0, fmt.Errorf("reading %s: %w", path, err)
	}
	format := Detect(head[:n])
	if format == Zip {
		return "", 0, fmt.Errorf("base image %s is a zip archive, which is not supported: extract the image first", path)
	}
	return format, st.Size(), nil
}

// extFormat is the format a file name suggests, or "" when it suggests none.
func extFormat(path string) Format {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".xz":
		return XZ
	case ".zst", ".zstd":
		return Zstd
	case ".gz":
		return Gzip
	case ".bz2":
		return Bzip2
	case ".zip":
		return Zip
	case ".img", ".raw":
		return Raw
	}
	return ""
}

func parseSHA256(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(s, "sha256:")))
	if s == "" {
		return "", nil
	}
	if len(s) != sha256.Size*2 {
		return "", fmt.Errorf("invalid sha256 %q: want %d hex digits", s, sha256.Size*2)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return "", fmt.Errorf("invalid sha256 %q: not hex", s)
	}
	return s, nil
}

// httpURL reports whether s is an http or https URL.
func httpURL(s string) (*url.URL, bool) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, false
	}
	return u, true
}

// localPath turns a file:// URL into a path; anything else is already a path.
func localPath(s string) string {
	if strings.HasPrefix(s, "file://") {
		if u, err := url.Parse(s); err == nil {
			return u.Path
		}
	}
	return s
}

func (c *Cache) blobPath(sum string) string { return filepath.Join(c.Dir, "blobs", "sha256", sum) }

func (c *Cache) lockPath(name string) string { return filepath.Join(c.Dir, "locks", name+".lock") }

func (c *Cache) mkdirs(dirs ...string) error {
	for _, d := range append(dirs, filepath.Join(c.Dir, "locks")) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating cache directory: %w", err)
		}
	}
	return nil
}

// writeFileAtomic writes b to path through a uniquely named temporary file and a rename.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}
