package fetch

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/edgeimg/edgeimg/internal/testutil"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Compressors that make test inputs: real command-line tools, to prove compatibility with
// what images are published with, and Go encoders for unusual shapes (several frames or
// members).
type compressor struct {
	name   string
	format Format
	make   func(t *testing.T, dir string, raw []byte) []byte
}

func cli(t *testing.T, dir string, raw []byte, tool string, args ...string) []byte {
	t.Helper()
	in := writeFile(t, filepath.Join(dir, "disk.img"), raw)
	out := filepath.Join(dir, "disk.out")
	testutil.Run(t, tool, append(args, "-o", out, in)...)
	return readFile(t, out)
}

func goXZ(t testing.TB, raw []byte) []byte {
	var b bytes.Buffer
	w, err := xz.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func goZstd(t testing.TB, raw []byte) []byte {
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.EncodeAll(raw, nil)
}

func goGzip(t testing.TB, raw []byte) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var compressors = []compressor{
	{"xz CLI", XZ, func(t *testing.T, dir string, raw []byte) []byte {
		// Several blocks, as multi-threaded xz makes them.
		in := writeFile(t, filepath.Join(dir, "disk.img"), raw)
		testutil.Run(t, "xz", "-k", "-T2", "--block-size=1MiB", in)
		return readFile(t, in+".xz")
	}},
	{"zstd CLI", Zstd, func(t *testing.T, dir string, raw []byte) []byte {
		return cli(t, dir, raw, "zstd", "-q", "--long=27")
	}},
	{"gzip CLI", Gzip, func(t *testing.T, dir string, raw []byte) []byte {
		in := writeFile(t, filepath.Join(dir, "disk.img"), raw)
		testutil.Run(t, "gzip", "-k", "-n", in)
		return readFile(t, in+".gz")
	}},
	{"xz Go", XZ, func(t *testing.T, _ string, raw []byte) []byte { return goXZ(t, raw) }},
	{"xz Go two streams", XZ, func(t *testing.T, _ string, raw []byte) []byte {
		h := len(raw) / 3
		return append(goXZ(t, raw[:h]), goXZ(t, raw[h:])...)
	}},
	{"zstd Go", Zstd, func(t *testing.T, _ string, raw []byte) []byte { return goZstd(t, raw) }},
	{"zstd Go two frames", Zstd, func(t *testing.T, _ string, raw []byte) []byte {
		h := len(raw)/2 + 1
		return append(goZstd(t, raw[:h]), goZstd(t, raw[h:])...)
	}},
	{"gzip Go two members", Gzip, func(t *testing.T, _ string, raw []byte) []byte {
		h := len(raw) / 4
		return append(goGzip(t, raw[:h]), goGzip(t, raw[h:])...)
	}},
}

func TestBaseRoundTrips(t *testing.T) {
	for _, tail := range []bool{true, false} {
		raw := testImage(4<<20+4242, tail)
		for _, comp := range compressors {
			t.Run(comp.name, func(t *testing.T) {
				dir := t.TempDir()
				src := writeFile(t, filepath.Join(dir, "base.img.xz"), comp.make(t, dir, raw))
				c := &Cache{Dir: filepath.Join(dir, "cache")}
				res := checkBase(t, c, src, raw, comp.format)
				if res.RawPath != filepath.Join(c.Dir, "raw", res.SourceSHA256+".img") {
					t.Errorf("raw path %s", res.RawPath)
				}
				// A second build uses the cached raw image as it is.
				st1, _ := os.Stat(res.RawPath)
				res2 := checkBase(t, c, src, raw, comp.format)
				st2, _ := os.Stat(res2.RawPath)
				if *res2 != *res || !os.SameFile(st1, st2) {
					t.Errorf("second Base: %+v, first %+v", res2, res)
				}
				if n := len(cacheFiles(t, c.Dir)); n != 2 { // the image and its .json
					t.Errorf("cache holds %v", cacheFiles(t, c.Dir))
				}
			})
		}
	}
	t.Run("bzip2 testdata", func(t *testing.T) {
		// testdata/image.bz2 was made by `bzip2 -9` from testImage(1<<20+100, true).
		c := &Cache{Dir: t.TempDir()}
		checkBase(t, c, "testdata/image.bz2", testImage(1<<20+100, true), Bzip2)
	})
}

// checkBase runs Base on src and checks that the result is the raw image want.
func checkBase(t *testing.T, c *Cache, src string, want []byte, format Format) *Result {
	t.Helper()
	srcBytes := readFile(t, src)
	res, err := c.Base(t.Context(), src, sum(srcBytes))
	if err != nil {
		t.Fatal(err)
	}
	got := readFile(t, res.RawPath)
	if !bytes.Equal(got, want) {
		t.Fatalf("raw image differs from the original (%d bytes, want %d)", len(got), len(want))
	}
	if res.Format != format || res.SourceSHA256 != sum(srcBytes) || res.RawSHA256 != sum(want) || res.Size != int64(len(want)) {
		t.Errorf("result %+v", res)
	}
	return res
}

func TestBaseRawUsedInPlace(t *testing.T) {
	raw := testImage(2<<20, true)
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "disk.img"), raw)
	c := &Cache{Dir: filepath.Join(dir, "cache")}
	res, err := c.Base(t.Context(), "file://"+src, "")
	if err != nil {
		t.Fatal(err)
	}
	want := Result{RawPath: src, SourceSHA256: sum(raw), RawSHA256: sum(raw), Size: int64(len(raw)), Format: Raw}
	if *res != want {
		t.Errorf("got %+v, want %+v", res, want)
	}
	if got := cacheFiles(t, c.Dir); len(got) != 0 {
		t.Errorf("raw image copied into the cache: %v", got)
	}
}

// A compressed image named like a raw one is still recognised by its magic bytes.
func TestBaseDetectsByContent(t *testing.T) {
	raw := testImage(1<<20, false)
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "disk.img"), goZstd(t, raw))
	checkBase(t, &Cache{Dir: filepath.Join(dir, "cache")}, src, raw, Zstd)
}

func TestBaseLocalChecksum(t *testing.T) {
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "disk.img.gz"), goGzip(t, testImage(1<<20, true)))
	wrong := sum([]byte("x"))
	c := &Cache{Dir: filepath.Join(dir, "cache")}
	_, err := c.Base(t.Context(), src, wrong)
	if err == nil {
		t.Fatal("wrong sha256 accepted")
	}
	for _, s := range []string{src, wrong, sum(readFile(t, src))} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
	if got := cacheFiles(t, c.Dir); len(got) != 0 {
		t.Errorf("cache holds %v", got)
	}
}

func TestBaseBrokenInput(t *testing.T) {
	raw := testImage(2<<20, true)
	for _, comp := range compressors {
		t.Run(comp.name, func(t *testing.T) {
			dir := t.TempDir()
			z := comp.make(t, dir, raw)
			flipped := bytes.Clone(z)
			flipped[len(z)/2] ^= 0x55
			for _, tc := range []struct {
				name, msg string
				data      []byte
			}{
				{"truncated in the middle", "truncated " + string(comp.format) + " stream", z[:len(z)/2]},
				{"last byte missing", string(comp.format) + " stream", z[:len(z)-1]},
				{"header only", "truncated " + string(comp.format) + " stream", z[:MagicLen]},
				{"corrupt", string(comp.format) + " stream", flipped},
			} {
				src := writeFile(t, filepath.Join(dir, "broken.img"), tc.data)
				c := &Cache{Dir: filepath.Join(dir, "cache")}
				_, err := c.Base(t.Context(), src, "")
				if err == nil {
					t.Errorf("%s: no error", tc.name)
					continue
				}
				t.Logf("%s: %v", tc.name, err)
				if !strings.Contains(err.Error(), src) || !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("%s: error %q should name %s and say %q", tc.name, err, src, tc.msg)
				}
				if got := cacheFiles(t, c.Dir); len(got) != 0 {
					t.Errorf("%s: cache holds %v", tc.name, got)
				}
			}
		})
	}
	t.Run("bzip2 testdata", func(t *testing.T) {
		dir := t.TempDir()
		bz := readFile(t, "testdata/image.bz2")
		src := writeFile(t, filepath.Join(dir, "broken.img.bz2"), bz[:len(bz)/2])
		c := &Cache{Dir: filepath.Join(dir, "cache")}
		_, err := c.Base(t.Context(), src, "")
		if err == nil || !strings.Contains(err.Error(), src) || !strings.Contains(err.Error(), "truncated bzip2 stream") {
			t.Errorf("err = %v", err)
		}
		if got := cacheFiles(t, c.Dir); len(got) != 0 {
			t.Errorf("cache holds %v", got)
		}
	})
}

func TestBaseZipRejected(t *testing.T) {
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "os.zip"), []byte("PK\x03\x04rest of a zip"))
	_, err := (&Cache{Dir: dir}).Base(t.Context(), src, "")
	if err == nil || !strings.Contains(err.Error(), "zip") || !strings.Contains(err.Error(), src) {
		t.Fatalf("err = %v", err)
	}
}

func TestBaseEmpty(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{"empty.img": nil, "empty.img.gz": goGzip(t, nil)} {
		src := writeFile(t, filepath.Join(dir, name), data)
		_, err := (&Cache{Dir: filepath.Join(dir, "cache")}).Base(t.Context(), src, "")
		if err == nil || !strings.Contains(err.Error(), "empty") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestBaseMaxRawSize(t *testing.T) {
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "big.img.zst"), goZstd(t, make([]byte, 4<<20)))
	c := &Cache{Dir: filepath.Join(dir, "cache")}
	_, err := c.Base(t.Context(), src, "", WithMaxRawSize(1<<20))
	if err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("err = %v", err)
	}
	if got := cacheFiles(t, c.Dir); len(got) != 0 {
		t.Errorf("cache holds %v", got)
	}
}

func TestBaseCanceled(t *testing.T) {
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "disk.img.gz"), goGzip(t, testImage(4<<20, true)))
	c := &Cache{Dir: filepath.Join(dir, "cache")}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := c.Base(ctx, src, "")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if got := cacheFiles(t, c.Dir); len(got) != 0 {
		t.Errorf("cache holds %v", got)
	}
}

func TestBaseFromURL(t *testing.T) {
	raw := testImage(4<<20, true)
	z := goXZ(t, raw)
	fs, srv := newServer(t, z)
	c := &Cache{Dir: t.TempDir()}
	for range 2 {
		res, err := c.Base(t.Context(), srv.URL+"/2024-11-19-raspios-bookworm-arm64-lite.img.xz", sum(z))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readFile(t, res.RawPath), raw) || res.SourceSHA256 != sum(z) || res.RawSHA256 != sum(raw) || res.Format != XZ {
			t.Fatalf("result %+v", res)
		}
	}
	if n := len(fs.requests()); n != 1 {
		t.Errorf("%d requests, want 1 (the second build must use the cache)", n)
	}
}

// Two builds sharing a cache decompress the same image at once; both get it whole.
func TestBaseConcurrent(t *testing.T) {
	raw := testImage(8<<20, true)
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "disk.img.zst"), goZstd(t, raw))
	var wg sync.WaitGroup
	res := make([]*Result, 4)
	errs := make([]error, 4)
	for i := range res {
		wg.Go(func() { res[i], errs[i] = (&Cache{Dir: filepath.Join(dir, "cache")}).Base(t.Context(), src, "") })
	}
	wg.Wait()
	for i := range res {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !bytes.Equal(readFile(t, res[i].RawPath), raw) {
			t.Fatalf("build %d read a damaged image", i)
		}
	}
	if got := cacheFiles(t, filepath.Join(dir, "cache")); len(got) != 2 {
		t.Errorf("cache holds %v", got)
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Format
	}{
		{"\xfd7zXZ\x00\x00", XZ},
		{"\xfd7zXZ", Raw},
		{"\x28\xb5\x2f\xfd\x04", Zstd},
		{"\x50\x2a\x4d\x18\x00", Zstd},
		{"\x5f\x2a\x4d\x18\x00", Zstd},
		{"\x1f\x8b\x08\x00", Gzip},
		{"\x1f\x8b\x07\x00", Raw},
		{"BZh9", Bzip2},
		{"BZh0", Raw},
		{"PK\x03\x04", Zip},
		{"\xeb\x3c\x90mkfs.fat", Raw},
		{"", Raw},
	} {
		if got := Detect([]byte(tc.in)); got != tc.want {
			t.Errorf("Detect(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", "/var/cache/me")
	if d, err := DefaultCacheDir(); err != nil || d != "/var/cache/me/edgeimg" {
		t.Errorf("with XDG_CACHE_HOME: %s, %v", d, err)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/pi")
	if d, err := DefaultCacheDir(); err != nil || d != "/home/pi/.cache/edgeimg" {
		t.Errorf("without XDG_CACHE_HOME: %s, %v", d, err)
	}
}
