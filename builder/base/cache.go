package base

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// cacheFormat names the layout of cache entries; bump it when the tar or sidecar changes.
const cacheFormat = "edgeimg-rootfs-cache/1"

// cacheMeta is the sidecar written next to each cached tar once the tar is complete. It lets a
// later build trust the tar without reading its data: the file size, the number of entries and
// a digest of every header (metadata and data offsets) must all match.
type cacheMeta struct {
	Format  string `json:"format"`
	Key     string `json:"key"`
	Reader  string `json:"reader"`
	Size    int64  `json:"size"`
	Entries int    `json:"entries"`
	Index   string `json:"index"`
}

// RootFSCached returns the same tree as RootFS, but keeps a copy of the root filesystem in
// cacheDir/rootfs/<key>.tar (a PAX tar: xattrs as SCHILY.xattr records, hard links as links,
// sockets as FIFO entries with the PAX record tree.SocketPAXKey=1) and serves every file's
// content from that tar. The first call reads the filesystem (as RootFS does) and writes the
// tar (to a temporary file renamed into place, then a <key>.json sidecar); later calls only
// index the tar's headers. A cache entry whose sidecar is missing or does not match the tar
// (truncated, corrupt, written by another format) is discarded and rebuilt.
//
// key must identify the image's content and the reader (for example the raw image's sha256
// and ReaderVersion()); it may hold letters, digits, '.', '_' and '-'. The cache file stays
// open until the Image is closed.
func (img *Image) RootFSCached(ctx context.Context, cacheDir, key string) (*tree.Tree, error) {
	if !validKey(key) {
		return nil, fmt.Errorf("rootfs cache key %q: only letters, digits, '.', '_' and '-' are allowed", key)
	}
	dir := filepath.Join(cacheDir, "rootfs")
	tarPath := filepath.Join(dir, key+".tar")
	metaPath := filepath.Join(dir, key+".json")

	t, f, err := loadCache(tarPath, metaPath, key)
	if err == nil {
		img.keepOpen(f)
		return t, nil
	}
	if !errors.Is(err, errCacheMiss) {
		return nil, err
	}
	// A stale or damaged entry is removed before it is rebuilt.
	if err := removeIfExists(tarPath); err != nil {
		return nil, err
	}
	if err := removeIfExists(metaPath); err != nil {
		return nil, err
	}

	src, err := img.RootFS(ctx)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("rootfs cache: %w", err)
	}
	t, f, err = writeCache(ctx, src, dir, tarPath, metaPath, key)
	if err != nil {
		return nil, fmt.Errorf("rootfs cache %s: %w", tarPath, err)
	}
	img.keepOpen(f)
	return t, nil
}

var errCacheMiss = errors.New("rootfs cache miss")

func validKey(k string) bool {
	if k == "" || k == "." || k == ".." || len(k) > 200 {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rootfs cache: %w", err)
	}
	return nil
}

// loadCache opens and validates a cache entry. Any mismatch is reported as errCacheMiss;
// other errors (permissions, I/O) are returned as they are.
func loadCache(tarPath, metaPath, key string) (*tree.Tree, *os.File, error) {
	mb, err := os.ReadFile(metaPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, errCacheMiss
	}
	if err != nil {
		return nil, nil, fmt.Errorf("rootfs cache: %w", err)
	}
	var meta cacheMeta
	if err := json.Unmarshal(mb, &meta); err != nil || meta.Format != cacheFormat || meta.Key != key || meta.Reader != readerVersion {
		return nil, nil, errCacheMiss
	}
	f, err := os.Open(tarPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, errCacheMiss
	}
	if err != nil {
		return nil, nil, fmt.Errorf("rootfs cache: %w", err)
	}
	st, err := f.Stat()
	if err != nil || st.Size() != meta.Size {
		f.Close()
		return nil, nil, errCacheMiss
	}
	t, err := tree.FromTar(f, st.Size())
	if err != nil {
		f.Close()
		return nil, nil, errCacheMiss
	}
	if t.Len() != meta.Entries || indexDigest(t) != meta.Index {
		f.Close()
		return nil, nil, errCacheMiss
	}
	return t, f, nil
}

// writeCache writes src as a tar into dir, indexes the written file, checks that nothing was
// lost on the way, and moves tar and sidecar into place.
func writeCache(ctx context.Context, src *tree.Tree, dir, tarPath, metaPath, key string) (*tree.Tree, *os.File, error) {
	tmp, err := os.CreateTemp(dir, key+".tar.tmp-*")
	if err != nil {
		return nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := writeCacheTar(ctx, src, bw); err != nil {
		return nil, nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, nil, err
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, nil, err
	}
	t, err := tree.FromTar(tmp, size)
	if err != nil {
		return nil, nil, fmt.Errorf("reading back: %w", err)
	}
	if a, b := metaLines(src), metaLines(t); !equalLines(a, b) {
		return nil, nil, fmt.Errorf("reading back: the tar does not reproduce the filesystem: %s", firstDiff(a, b))
	}
	if err := os.Rename(tmp.Name(), tarPath); err != nil {
		return nil, nil, err
	}
	ok = true
	meta := cacheMeta{Format: cacheFormat, Key: key, Reader: readerVersion, Size: size, Entries: t.Len(), Index: indexDigest(t)}
	mb, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		tmp.Close()
		return nil, nil, err
	}
	if err := writeFileAtomic(metaPath, append(mb, '\n')); err != nil {
		tmp.Close()
		return nil, nil, err
	}
	return t, tmp, nil
}

func writeFileAtomic(p string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+".tmp-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), p); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// writeCacheTar writes every entry of t, sockets included, in Walk order.
func writeCacheTar(ctx context.Context, t *tree.Tree, w io.Writer) error {
	_, err := t.WriteTarContext(ctx, w, tree.TarOptions{KeepSockets: true})
	return err
}

// metaLines describes every entry's metadata (not its content) canonically.
func metaLines(t *tree.Tree) []string {
	var out []string
	_ = t.Walk(func(e *tree.Entry) error {
		out = append(out, metaLine(e))
		return nil
	})
	return out
}

func metaLine(e *tree.Entry) string {
	b := make([]byte, 0, 128)
	b = strconv.AppendQuote(b, e.Path)
	b = append(b, ' ')
	b = append(b, e.Kind.String()...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(e.Mode), 8)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(e.UID), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(e.GID), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.ModTime.UnixNano(), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.Size, 10)
	b = append(b, ' ')
	b = strconv.AppendQuote(b, e.Linkname)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(e.Devmajor), 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(e.Devminor), 10)
	if len(e.Xattrs) > 0 {
		keys := make([]string, 0, len(e.Xattrs))
		for k := range e.Xattrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b = append(b, ' ')
			b = strconv.AppendQuote(b, k)
			b = append(b, '=')
			b = hex.AppendEncode(b, e.Xattrs[k])
		}
	}
	return string(b)
}

// indexDigest hashes every entry's metadata and, for files, where its data lies in the tar.
func indexDigest(t *tree.Tree) string {
	h := sha256.New()
	_ = t.Walk(func(e *tree.Entry) error {
		writeLine(h, metaLine(e))
		if s, ok := e.Content.(tree.Section); ok {
			writeLine(h, "@"+strconv.FormatInt(s.Offset, 10))
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

func writeLine(h hash.Hash, s string) {
	io.WriteString(h, s)
	h.Write([]byte{'\n'})
}

func equalLines(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func firstDiff(a, b []string) string {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return fmt.Sprintf("filesystem has %s, tar has %s", a[i], b[i])
		}
	}
	return fmt.Sprintf("filesystem has %d entries, tar has %d", len(a), len(b))
}
