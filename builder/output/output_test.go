package output

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/internal/testutil"
)

// testInput writes a deterministic disk-image-like file: runs of zeros, repeated text and
// incompressible bytes, larger than one job of the concurrent zstd encoder.
func testInput(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for b.Len() < 40<<20 { // more than one 32 MiB job of WithConcurrentBlocks
		switch rng.IntN(3) {
		case 0:
			b.Write(make([]byte, rng.IntN(1<<20)))
		case 1:
			b.Write(bytes.Repeat([]byte("edgeimg builds images; "), rng.IntN(20000)))
		default:
			r := make([]byte, rng.IntN(256<<10))
			for i := range r {
				r[i] = byte(rng.Uint32())
			}
			b.Write(r)
		}
	}
	p := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b.Bytes()
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// onlyFiles fails the test unless dir holds exactly the named files (no temporary leftovers).
func onlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(names, " ") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}

func decompress(t *testing.T, tool string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(testutil.NeedTool(t, tool), args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("%s %v: %v\n%s", tool, args, err, ee.Stderr)
		}
		t.Fatalf("%s %v: %v", tool, args, err)
	}
	return out
}

func TestCompressZstd(t *testing.T) {
	testutil.NeedTool(t, "zstd")
	dir := t.TempDir()
	src, data := testInput(t, dir)

	var digests []string
	var last int64
	for _, procs := range []int{1, 2, 1, 2} {
		prev := runtime.GOMAXPROCS(procs)
		dst := filepath.Join(dir, "disk.img.zst")
		os.Remove(dst)
		last = 0
		got, err := Compress(context.Background(), src, dst, Zstd, func(n int64) {
			if n < last {
				t.Errorf("progress went back from %d to %d", last, n)
			}
			last = n
		})
		runtime.GOMAXPROCS(prev)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if got != sum(b) {
			t.Errorf("Compress returned sha256 %s, the file has %s", got, sum(b))
		}
		if last != int64(len(data)) {
			t.Errorf("progress ended at %d, want the input size %d", last, len(data))
		}
		digests = append(digests, got)
	}
	for i, d := range digests {
		if d != digests[0] {
			t.Errorf("run %d (GOMAXPROCS %d): .zst sha256 %s differs from run 0's %s", i, []int{1, 2, 1, 2}[i], d, digests[0])
		}
	}
	dst := filepath.Join(dir, "disk.img.zst")
	decompress(t, "zstd", "-tq", dst)
	if out := decompress(t, "zstd", "-dcq", dst); !bytes.Equal(out, data) {
		t.Errorf("zstd -d gives %d bytes (sha256 %s), want the %d input bytes (%s)", len(out), sum(out), len(data), sum(data))
	}
	onlyFiles(t, dir, "disk.img", "disk.img.zst")
}

func TestCompressXZ(t *testing.T) {
	testutil.NeedTool(t, "xz")
	dir := t.TempDir()
	data := bytes.Repeat([]byte("a small xz test\x00\x01\x02"), 50000)
	src := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "disk.img"+Ext(XZ))
	first, err := Compress(context.Background(), src, dst, XZ, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out := decompress(t, "xz", "-dc", dst); !bytes.Equal(out, data) {
		t.Errorf("xz -d gives %d bytes, want %d", len(out), len(data))
	}
	second, err := Compress(context.Background(), src, dst, XZ, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Errorf("two xz runs differ: %s, %s", first, second)
	}
	onlyFiles(t, dir, "disk.img", "disk.img.xz")
}

func TestExt(t *testing.T) {
	for kind, want := range map[string]string{Zstd: ".zst", XZ: ".xz", None: "", "": ""} {
		if got := Ext(kind); got != want {
			t.Errorf("Ext(%q) = %q, want %q", kind, got, want)
		}
	}
}

func TestCompressCancelled(t *testing.T) {
	dir := t.TempDir()
	src, _ := testInput(t, dir)
	for _, kind := range []string{Zstd, XZ} {
		ctx, cancel := context.WithCancel(context.Background())
		dst := filepath.Join(dir, "disk.img"+Ext(kind))
		// Cancel once compression has started: like a Ctrl-C in the middle of a build.
		_, err := Compress(ctx, src, dst, kind, func(n int64) {
			if n > 1<<20 {
				cancel()
			}
		})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: cancelled Compress returned %v, want context.Canceled", kind, err)
		}
		if err != nil && !strings.Contains(err.Error(), src) {
			t.Errorf("%s: error %q does not name the input", kind, err)
		}
	}
	onlyFiles(t, dir, "disk.img")
}

func TestCompressErrors(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Compress(context.Background(), src, filepath.Join(dir, "disk.img.lz"), "lz4", nil); err == nil || !strings.Contains(err.Error(), `"lz4"`) {
		t.Errorf("unknown compression: %v", err)
	}
	if _, err := Compress(context.Background(), filepath.Join(dir, "none.img"), filepath.Join(dir, "none.img.zst"), Zstd, nil); err == nil || !strings.Contains(err.Error(), "none.img") {
		t.Errorf("missing input: %v", err)
	}
	onlyFiles(t, dir, "disk.img")
}

func TestAtomicWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "SHA256SUMS")

	// A new file, with its digest and mode 0644 whatever the umask.
	got, err := AtomicWrite(p, func(w io.Writer) error {
		_, err := io.WriteString(w, "old\n")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != sum([]byte("old\n")) {
		t.Errorf("sha256 %s, want %s", got, sum([]byte("old\n")))
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("stat: %v, %v", st, err)
	}

	// fn fails after writing part of its output: the old file stays, nothing else is left.
	boom := errors.New("boom")
	_, err = AtomicWrite(p, func(w io.Writer) error {
		if _, err := w.Write(bytes.Repeat([]byte("x"), 3<<20)); err != nil { // past the buffer
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("AtomicWrite returned %v, want fn's error", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old\n" {
		t.Errorf("a failed write changed the file: %q", b)
	}
	onlyFiles(t, dir, "SHA256SUMS")

	// A failed write of a new file leaves nothing.
	if _, err := AtomicWrite(filepath.Join(dir, "new"), func(io.Writer) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("AtomicWrite returned %v", err)
	}
	onlyFiles(t, dir, "SHA256SUMS")

	// Replacing: a reader holding the old file keeps reading the old content (a rename, not
	// a rewrite in place), and the path has the new content.
	old, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := AtomicWrite(p, func(w io.Writer) error {
		_, err := io.WriteString(w, "new\n")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(old); string(b) != "old\n" {
		t.Errorf("the old file was rewritten in place: an open reader sees %q", b)
	}
	if b, _ := os.ReadFile(p); string(b) != "new\n" {
		t.Errorf("replaced file holds %q", b)
	}
	onlyFiles(t, dir, "SHA256SUMS")

	// A directory that does not exist is an error naming it.
	if _, err := AtomicWrite(filepath.Join(dir, "no/such/file"), func(io.Writer) error { return nil }); err == nil || !strings.Contains(err.Error(), "no/such") {
		t.Errorf("missing directory: %v", err)
	}
}

func TestSHA256Sums(t *testing.T) {
	tool := testutil.NeedTool(t, "sha256sum")
	dir := t.TempDir()
	files := map[string][]byte{
		"gw-rpi4.img":         bytes.Repeat([]byte{0}, 1<<16),
		"gw-rpi4.img.zst":     []byte("compressed"),
		"gw-rpi4.report.json": []byte("{}\n"),
	}
	sums := map[string]string{}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := SHA256File(p)
		if err != nil {
			t.Fatal(err)
		}
		if s != sum(b) {
			t.Errorf("SHA256File(%s) = %s, want %s", name, s, sum(b))
		}
		sums[name] = s
	}
	text := SHA256Sums(sums)
	want := sum(files["gw-rpi4.img"]) + "  gw-rpi4.img\n" +
		sum(files["gw-rpi4.img.zst"]) + "  gw-rpi4.img.zst\n" +
		sum(files["gw-rpi4.report.json"]) + "  gw-rpi4.report.json\n"
	if string(text) != want {
		t.Errorf("SHA256Sums:\n%s\nwant (sorted by name):\n%s", text, want)
	}
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), text, 0o644); err != nil {
		t.Fatal(err)
	}
	check := func() ([]byte, error) {
		c := exec.Command(tool, "-c", "--strict", "SHA256SUMS")
		c.Dir = dir
		return c.CombinedOutput()
	}
	if out, err := check(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, out)
	}
	// The check can fail: change a file.
	if err := os.WriteFile(filepath.Join(dir, "gw-rpi4.img.zst"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := check(); err == nil {
		t.Errorf("sha256sum -c accepted a changed file:\n%s", out)
	}
	if _, err := SHA256File(filepath.Join(dir, "none")); err == nil {
		t.Error("SHA256File of a missing file: no error")
	}
}
