package fatfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

const mib = 1 << 20

var epoch = time.Date(2024, 5, 17, 13, 45, 30, 0, time.UTC)

// noise is deterministic pseudo-random content.
func noise(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

func bytesFile(p string, b []byte) File {
	return File{Path: p, Size: int64(len(b)), Content: tree.Bytes(b)}
}

// bootFiles is a boot partition's worth of files with the awkward cases: nested
// directories, 90 files in one directory, long names, names whose 8.3 forms clash, a
// 20 MiB file, empty files and an empty directory.
func bootFiles() []File {
	files := []File{
		bytesFile("config.txt", []byte("arm_64bit=1\nkernel=kernel8.img\n")),
		bytesFile("cmdline.txt", []byte("console=serial0,115200 root=PARTUUID=0badcafe-05 rootwait cgroup_memory=1 cgroup_enable=memory\n")),
		bytesFile("kernel8.img", noise(1, 20*mib)),
		bytesFile("start4.elf", noise(2, 2*mib+123)),
		bytesFile("fixup4.dat", noise(3, 5446)),
		bytesFile("bcm2711-rpi-4-b.dtb", noise(4, 52_000)),
		{Path: "empty.txt", Content: tree.Bytes(nil)},
		{Path: "overlays/empty"},
		{Path: "spare", Dir: true},
		bytesFile("overlays/README", []byte("overlays\n")),
		bytesFile("overlays/overlay_map.dtb", noise(5, 4000)),
		bytesFile("overlays/hat_map.dtb", noise(6, 100)),
		bytesFile("overlays/hat_map.dtbo", noise(7, 200)),
		bytesFile("overlays/HAT_MAP.DT", noise(8, 300)),
		bytesFile("a/b/c/deep file with spaces.txt", []byte("deep\n")),
		bytesFile("a/b/sibling.txt", []byte("sibling\n")),
		bytesFile("a/"+strings.Repeat("long-name-", 20)+"end.conf", []byte("long\n")),
		bytesFile("FILE.HTM", []byte("short\n")),
		bytesFile("file.html", []byte("long 1\n")),
		bytesFile("file.htmx", []byte("long 2\n")),
	}
	for i := range 90 {
		files = append(files, bytesFile(fmt.Sprintf("overlays/overlay-number-%02d.dtbo", i), noise(uint64(100+i), 1000+37*i)))
	}
	return files
}

var bootOptions = Options{Label: "BOOT-A", VolumeID: 0x1234ABCD, Epoch: epoch}

// newImage makes a sparse image of size bytes.
func newImage(t testing.TB, size int64) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return f
}

// extract copies the partition window to a file of its own for the tools.
func extract(t *testing.T, f *os.File, off, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "part.img")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, io.NewSectionReader(f, off, size)); err != nil {
		t.Fatal(err)
	}
	return p
}

// fsck runs fsck.vfat read-only and returns its output and whether it found nothing.
func fsck(t *testing.T, part string) (string, bool) {
	t.Helper()
	out, err := exec.Command(testutil.NeedTool(t, "fsck.vfat"), "-n", "-V", "-v", part).CombinedOutput()
	return string(out), err == nil
}

func TestWriteBootPartition(t *testing.T) {
	const off, size = 4 * mib, 256 * mib
	f := newImage(t, 600*mib)
	files := bootFiles()
	start := time.Now()
	if err := Write(f, off, size, files, bootOptions); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	var total int64
	for _, fl := range files {
		total += fl.Size
	}
	t.Logf("wrote %d files, %.1f MiB in %v (%.0f MiB/s)", len(files), float64(total)/mib, elapsed, float64(total)/mib/elapsed.Seconds())

	part := extract(t, f, off, size)
	out, ok := fsck(t, part)
	if !ok || !strings.Contains(out, "bytes per cluster") {
		t.Fatalf("fsck.vfat -n:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		// Any line fsck prints while checking the tree is a complaint.
		if strings.HasPrefix(line, "/") && !strings.HasPrefix(line, part+":") || strings.Contains(strings.ToLower(line), "wrong") || strings.Contains(line, "uninitialized") {
			t.Errorf("fsck.vfat: %s", line)
		}
	}
	if m := regexp.MustCompile(`(\d+) data clusters`).FindStringSubmatch(out); m == nil || len(m[1]) < 5 {
		t.Errorf("fsck.vfat data clusters: %v", m)
	}

	// Every file comes back through mtools with its name and content.
	dir := t.TempDir()
	testutil.Run(t, "mcopy", "-s", "-n", "-m", "-i", part, "::*", dir)
	want := map[string][]byte{}
	for _, fl := range files {
		if fl.Dir {
			want[fl.Path+"/"] = nil
			continue
		}
		b := []byte{}
		if fl.Content != nil {
			rc, _ := fl.Content.Open()
			b, _ = io.ReadAll(rc)
		}
		want[fl.Path] = b
	}
	got := map[string][]byte{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if fi.IsDir() {
			entries, _ := os.ReadDir(p)
			if len(entries) == 0 {
				got[rel+"/"] = nil
			}
			return nil
		}
		b, err := os.ReadFile(p)
		got[rel] = b
		if !fi.ModTime().Equal(epoch.Truncate(2*time.Second)) && !fi.ModTime().Equal(time.Date(2024, 5, 17, 13, 45, 30, 0, time.Local)) {
			t.Errorf("%s: mtime %v, want %v", rel, fi.ModTime(), epoch)
		}
		return err
	})
	for p, b := range want {
		if g, ok := got[p]; !ok || !bytes.Equal(g, b) {
			t.Errorf("%s: read back %d bytes (present %v), want %d", p, len(g), ok, len(b))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("unexpected %s", p)
		}
	}

	out = testutil.Run(t, "mdir", "-i", part, "::/overlays")
	if !strings.Contains(out, "overlay-number-89.dtbo") || !strings.Contains(out, "hat_map.dtbo") || !strings.Contains(out, "2024-05-17") {
		t.Errorf("mdir ::/overlays:\n%s", out)
	}
	if out := testutil.Run(t, "mtype", "-i", part, "::/cmdline.txt"); out != string(want["cmdline.txt"]) {
		t.Errorf("mtype ::/cmdline.txt = %q", out)
	}
	if out := testutil.Run(t, "mlabel", "-i", part, "-s", "::"); !strings.Contains(out, "Volume label is BOOT-A") {
		t.Errorf("mlabel -s: %q", out)
	}
	if out := testutil.Run(t, "minfo", "-i", part, "::"); !strings.Contains(out, "serial number: 1234ABCD") || !strings.Contains(out, "hidden sectors: 8192") {
		t.Errorf("minfo:\n%s", out)
	}
	out = testutil.Run(t, "blkid", "-p", "-o", "export", part)
	for _, w := range []string{"TYPE=vfat", "VERSION=FAT32", "LABEL=BOOT-A", "UUID=1234-ABCD"} {
		if !strings.Contains(out, w+"\n") {
			t.Errorf("blkid has no %s:\n%s", w, out)
		}
	}

	// Empty regions stay holes: the image holds about the content, not the partition.
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > total+8*mib {
		t.Errorf("image uses %d bytes on disk for %d bytes of content", used, total)
	}
}

func TestWriteReproducible(t *testing.T) {
	sum := func(off int64) [32]byte {
		f := newImage(t, off+64*mib)
		if err := Write(f, off, 64*mib, bootFiles()[3:], Options{Label: "CONFIG", VolumeID: 7, Epoch: epoch}); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, io.NewSectionReader(f, off, 64*mib))
		return [32]byte(h.Sum(nil))
	}
	a, b := sum(4*mib), sum(4*mib)
	if a != b {
		t.Errorf("two writes differ: %x %x", a, b)
	}
	// The offset only shows in the hidden-sectors field of the boot sectors.
	if c := sum(8 * mib); c == a {
		t.Errorf("offset does not show in the filesystem")
	}
}

// TestGoDiskfsProblems shows what fixup corrects: without it fsck.vfat reports each of
// go-diskfs's mistakes; with it, none.
func TestGoDiskfsProblems(t *testing.T) {
	files := []File{
		bytesFile("overlays/a.dtbo", []byte("a")),
		bytesFile("overlays/deeper/b.txt", []byte("b")),
		bytesFile("hat_map.dtb", []byte("1")),
		bytesFile("hat_map.dtbo", []byte("2")),
		{Path: "empty"},
	}
	f := newImage(t, 64*mib)
	if err := write(f, 0, 64*mib, files, bootOptions, false); err != nil {
		t.Fatal(err)
	}
	part := extract(t, f, 0, 64*mib)
	out, ok := fsck(t, part)
	if ok {
		t.Fatalf("fsck.vfat accepts go-diskfs's output as it is; is fixup still needed?\n%s", out)
	}
	for _, problem := range []string{
		"/overlays\n  Invalid '..' entry",
		"/empty\n  File size is 0 bytes, cluster chain length is > 0 bytes.",
		"Duplicate directory entry",
		"Free cluster summary uninitialized",
	} {
		if !strings.Contains(out, problem) {
			t.Errorf("fsck.vfat no longer reports %q:\n%s", problem, out)
		}
	}
	raw := make([]byte, 512)
	f.ReadAt(raw, 0)
	if id := binary.LittleEndian.Uint32(raw[0x43:]); id == bootOptions.VolumeID {
		t.Errorf("go-diskfs wrote the volume ID itself")
	}

	f = newImage(t, 64*mib)
	if err := Write(f, 0, 64*mib, files, bootOptions); err != nil {
		t.Fatal(err)
	}
	part = extract(t, f, 0, 64*mib)
	if out, ok := fsck(t, part); !ok || strings.Count(out, "\n/") != 1 {
		t.Errorf("fsck.vfat after fixup:\n%s", out)
	}
	// ".." of a directory in the root is cluster 0, deeper ones point at their parent.
	out = testutil.Run(t, "mdir", "-a", "-i", part, "::/overlays/deeper")
	if !strings.Contains(out, "b        txt") && !strings.Contains(out, "b.txt") {
		t.Errorf("mdir ::/overlays/deeper:\n%s", out)
	}
	raw = make([]byte, 512)
	f.ReadAt(raw, 0)
	if id := binary.LittleEndian.Uint32(raw[0x43:]); id != bootOptions.VolumeID {
		t.Errorf("volume ID %08x, want %08x", id, bootOptions.VolumeID)
	}
	backup := make([]byte, 512)
	f.ReadAt(backup, 6*512)
	if !bytes.Equal(raw, backup) {
		t.Errorf("backup boot sector differs")
	}
}

func TestSizes(t *testing.T) {
	if testing.Short() {
		t.Skip("writes several filesystems")
	}
	files := []File{bytesFile("autoboot.txt", []byte("[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"))}
	for _, size := range []int64{MinSize, MinSize + 3*512, 64 * mib, 260 * mib, 300 * mib} {
		f := newImage(t, size)
		if err := Write(f, 0, size, files, Options{Label: "CONFIG", VolumeID: 1, Epoch: epoch}); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		out, ok := fsck(t, extract(t, f, 0, size))
		m := regexp.MustCompile(`(\d+) data clusters`).FindStringSubmatch(out)
		if !ok || m == nil || len(m[1]) < 5 || m[1] < "65525" && len(m[1]) == 5 {
			t.Errorf("size %d: fsck.vfat:\n%s", size, out)
		}
		t.Logf("size %d: %s data clusters", size, m[1])
	}
	f := newImage(t, MinSize)
	err := Write(f, 0, MinSize-512, files, Options{Label: "CONFIG", Epoch: epoch})
	if err == nil || !strings.Contains(err.Error(), `"CONFIG"`) || !strings.Contains(err.Error(), "too small") {
		t.Errorf("MinSize-512: %v", err)
	}
}

func TestRejects(t *testing.T) {
	ok := bytesFile("a.txt", []byte("a"))
	cases := map[string]struct {
		files []File
		o     Options
		size  int64
	}{
		"lower-case label": {[]File{ok}, Options{Label: "boot"}, 64 * mib},
		"long label":       {[]File{ok}, Options{Label: "ABCDEFGHIJKL"}, 64 * mib},
		"no label":         {[]File{ok}, Options{}, 64 * mib},
		"absolute path":    {[]File{bytesFile("/a.txt", nil)}, bootOptions, 64 * mib},
		"dot dot":          {[]File{bytesFile("a/../../b", nil)}, bootOptions, 64 * mib},
		"dot file":         {[]File{bytesFile(".hidden", nil)}, bootOptions, 64 * mib},
		"colon":            {[]File{bytesFile("a:b", nil)}, bootOptions, 64 * mib},
		"non-ascii":        {[]File{bytesFile("caf\u00e9", nil)}, bootOptions, 64 * mib},
		"twice":            {[]File{ok, bytesFile("A.TXT", nil)}, bootOptions, 64 * mib},
		"file and dir":     {[]File{ok, bytesFile("a.txt/b", nil)}, bootOptions, 64 * mib},
		"short content":    {[]File{{Path: "a", Size: 10, Content: tree.Bytes("abc")}}, bootOptions, 64 * mib},
		"long content":     {[]File{{Path: "a", Size: 1, Content: tree.Bytes("abc")}}, bootOptions, 64 * mib},
		"odd size":         {[]File{ok}, bootOptions, 64*mib + 1},
		"too big":          {[]File{bytesFile("big", make([]byte, 40*mib))}, bootOptions, 40 * mib},
	}
	for name, c := range cases {
		f := newImage(t, 0)
		err := Write(f, 0, c.size, c.files, c.o)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.HasPrefix(err.Error(), fmt.Sprintf("FAT32 partition %q: ", c.o.Label)) {
			t.Errorf("%s: error does not name the partition: %v", name, err)
		}
		if name == "too big" && !strings.Contains(err.Error(), "content needs 41") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestShortNameHelpers(t *testing.T) {
	taken := map[string]bool{"HAT_MAP DTB": true, "HAT_MA~1DTB": true}
	if got := uniqueShort("HAT_MAP DTB", taken); got != "HAT_MA~2DTB" {
		t.Errorf("uniqueShort = %q", got)
	}
	if !isShortName("config.txt") || !isShortName("README") || isShortName("hat_map.dtbo") || isShortName("a.b.c") {
		t.Errorf("isShortName")
	}
	if d, tm := fatTime(time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)); d != 1<<5|1 || tm != 0 {
		t.Errorf("fatTime before 1980: %x %x", d, tm)
	}
	l := diskfsLayout(64 * mib)
	if l.valid() {
		t.Errorf("go-diskfs's 64 MiB layout %+v is valid after all", l)
	}
	if l, err := planLayout(64 * mib); err != nil || !l.valid() || l.size != 64*mib-1024 {
		t.Errorf("planLayout(64 MiB) = %+v, %v", l, err)
	}
}

// BenchmarkWrite writes a boot partition of 400 files, 64 MiB in all.
func BenchmarkWrite(b *testing.B) {
	var files []File
	var total int64
	for i := range 400 {
		n := 4000 + i*13
		if i%50 == 0 {
			n = 6 * mib
		}
		files = append(files, bytesFile(fmt.Sprintf("overlays/file-%03d.dtbo", i), noise(uint64(i), n)))
		total += int64(n)
	}
	b.SetBytes(total)
	for b.Loop() {
		f := newImage(b, 256*mib)
		if err := Write(f, 0, 256*mib, files, bootOptions); err != nil {
			b.Fatal(err)
		}
	}
}
