package fetch

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzDetect feeds arbitrary bytes through magic-byte detection and decompression into a
// cache. It must not panic; on success the raw image must be what NewReader decodes, inside
// the test's directory; on failure nothing may be left in the cache but lock files.
func FuzzDetect(f *testing.F) {
	small := testImage(200<<10, true)[:150<<10]
	f.Add([]byte{})
	f.Add([]byte("\xfd7zXZ\x00"))
	f.Add([]byte("\x28\xb5\x2f\xfd"))
	f.Add([]byte("BZh9"))
	f.Add([]byte("PK\x03\x04"))
	f.Add(small[:600])
	f.Add(goXZ(f, []byte("hello, raspberry pi\n")))
	for _, z := range [][]byte{goXZ(f, small), goZstd(f, small), goGzip(f, small)} {
		f.Add(z)
		f.Add(z[:len(z)/2])
	}
	if bz, err := os.ReadFile("testdata/image.bz2"); err == nil {
		f.Add(bz[:2000])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 20
		dir := t.TempDir()
		src := filepath.Join(dir, "in")
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cacheDir := filepath.Join(dir, "cache")
		res, err := (&Cache{Dir: cacheDir}).Base(t.Context(), src, "", WithMaxRawSize(limit))

		// Only the input, lock files, the input's remembered sum and (on success) one raw image with its metadata.
		var files []string
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasPrefix(p, filepath.Join(cacheDir, "locks")+string(filepath.Separator)) &&
				!strings.HasPrefix(p, filepath.Join(cacheDir, "localsums")+string(filepath.Separator)) {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			if len(files) != 1 || files[0] != src {
				t.Fatalf("after error %v the directory holds %v", err, files)
			}
			return
		}
		if !strings.HasPrefix(res.RawPath, dir+string(filepath.Separator)) {
			t.Fatalf("raw image %s outside %s", res.RawPath, dir)
		}
		got, err := os.ReadFile(res.RawPath)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(got)) != res.Size || sum(got) != res.RawSHA256 || res.SourceSHA256 != sum(data) {
			t.Fatalf("result %+v does not describe the %d-byte raw image", res, len(got))
		}
		rc, format, err := NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("Base succeeded but NewReader fails: %v", err)
		}
		defer rc.Close()
		want, err := io.ReadAll(io.LimitReader(rc, limit+1))
		if err != nil {
			t.Fatalf("Base succeeded but decoding fails: %v", err)
		}
		if format != res.Format || !bytes.Equal(got, want) {
			t.Fatalf("raw image (%s, %d bytes) differs from the decoded input (%s, %d bytes)", res.Format, len(got), format, len(want))
		}
		if format == Raw && res.RawPath != src {
			t.Fatalf("raw input copied to %s", res.RawPath)
		}
		if format != Raw && len(files) != 3 {
			t.Fatalf("cache holds %v", files)
		}
	})
}
