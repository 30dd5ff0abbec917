package basegen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

var tools = []string{"mke2fs", "debugfs", "e2fsck", "mkfs.vfat", "fsck.vfat", "mmd", "mcopy", "sfdisk"}

func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range tools {
		testutil.NeedTool(t, tool)
	}
}

// smallOptions is what the tests generate: small firmware, a little benchmark payload.
var smallOptions = Options{Seed: 7, Small: true, ExtraFiles: 40, ExtraBytes: 600 << 10}

func generate(t *testing.T, dir string, o Options) string {
	t.Helper()
	out := filepath.Join(dir, "base.img")
	if err := Generate(context.Background(), out, o); err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return out
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

type sfdiskJSON struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		Unit       string `json:"unit"`
		SectorSize int    `json:"sectorsize"`
		Partitions []struct {
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

// extract copies bytes [off, off+size) of img into a new file.
func extract(t *testing.T, img string, off, size int64, name string) string {
	t.Helper()
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	p := filepath.Join(t.TempDir(), name)
	dst, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(dst, io.NewSectionReader(src, off, size)); err != nil || n != size {
		t.Fatalf("extracting %s: %d bytes, %v", name, n, err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func debugfs(t *testing.T, fs, req string) string {
	t.Helper()
	return testutil.Run(t, "debugfs", "-R", req, fs)
}

func TestGenerateSmall(t *testing.T) {
	needTools(t)
	o := smallOptions
	img := generate(t, t.TempDir(), o)
	od := o.withDefaults()
	id := deriveIDs(o.Seed)

	// The partition table: MBR, p1 FAT32 LBA at 4 MiB, p2 Linux after it, signature fixed.
	var pt sfdiskJSON
	if err := json.Unmarshal([]byte(testutil.Run(t, "sfdisk", "--json", img)), &pt); err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	tbl := pt.PartitionTable
	if tbl.Label != "dos" || len(tbl.Partitions) != 2 || tbl.SectorSize != 512 {
		t.Fatalf("partition table: label %q, %d partitions, sector size %d; want dos, 2, 512", tbl.Label, len(tbl.Partitions), tbl.SectorSize)
	}
	if want := fmt.Sprintf("0x%08x", DiskID(o.Seed)); tbl.ID != want {
		t.Errorf("disk id %s, want %s", tbl.ID, want)
	}
	p1, p2 := tbl.Partitions[0], tbl.Partitions[1]
	if p1.Start != 8192 || p1.Type != "c" || p1.Size*512 != SmallBootSize {
		t.Errorf("p1 start %d type %s size %d; want 8192, c, %d sectors", p1.Start, p1.Type, p1.Size, SmallBootSize/512)
	}
	if p2.Type != "83" || p2.Start*512%align != 0 || p2.Start < p1.Start+p1.Size {
		t.Errorf("p2 start %d type %s; want 83 on a 4 MiB boundary after p1", p2.Start, p2.Type)
	}
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != (p2.Start+p2.Size)*512 {
		t.Errorf("image is %d bytes, partition 2 ends at %d", st.Size(), (p2.Start+p2.Size)*512)
	}
	if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used > st.Size()/4 {
		t.Errorf("image is not sparse: %d of %d bytes allocated", used, st.Size())
	}

	boot := extract(t, img, p1.Start*512, p1.Size*512, "boot.vfat")
	root := extract(t, img, p2.Start*512, p2.Size*512, "root.ext4")
	testutil.Run(t, "fsck.vfat", "-n", boot)
	testutil.Run(t, "e2fsck", "-fn", root)

	// Filesystem identities.
	sb := testutil.Run(t, "dumpe2fs", "-h", root)
	for _, want := range []string{"Filesystem volume name:   rootfs", "Filesystem UUID:          " + id.rootUUID, "Directory Hash Seed:      " + id.hashSeed} {
		if !strings.Contains(sb, want) {
			t.Errorf("dumpe2fs -h lacks %q", want)
		}
	}

	// The special inodes an unprivileged user cannot make in a directory.
	checkStat(t, root, "/usr/bin/sudo", "regular", 0o4755, 0, 0)
	checkStat(t, root, "/usr/bin/chage", "regular", 0o2755, 0, gidShadow)
	checkStat(t, root, "/etc/shadow", "regular", 0o640, 0, gidShadow)
	checkStat(t, root, "/etc/sudoers", "regular", 0o440, 0, 0)
	checkStat(t, root, "/var/mail", "directory", 0o2775, 0, gidMail)
	checkStat(t, root, "/var/cache/man", "directory", 0o755, uidMan, gidMan)
	checkStat(t, root, "/tmp", "directory", 0o1777, 0, 0)
	checkStat(t, root, "/root", "directory", 0o700, 0, 0)
	checkStat(t, root, "/run/initctl", "FIFO", 0o600, 0, 0)
	checkStat(t, root, "/dev/console", "character special", 0o600, 0, gidTTY)
	null := checkStat(t, root, "/dev/null", "character special", 0o666, 0, 0)
	if !strings.Contains(null, "Device major/minor number: 01:03") {
		t.Errorf("/dev/null is not 1,3:\n%s", null)
	}
	if ea := debugfs(t, root, "ea_list /usr/bin/ping"); !strings.Contains(ea, "security.capability (20) = 01 00 00 02 00 20 00 00 00 00 00 00 00 00 00 00 00 00 00 00") {
		t.Errorf("/usr/bin/ping lacks cap_net_raw+ep:\n%s", ea)
	}
	perl := debugfs(t, root, "stat /usr/bin/perl")
	perl5 := debugfs(t, root, "stat /usr/bin/perl5.36.0")
	if inode(t, perl) != inode(t, perl5) || !strings.Contains(perl, "Links: 2 ") {
		t.Errorf("/usr/bin/perl and perl5.36.0 are not one inode with two links:\n%s\n%s", perl, perl5)
	}
	if s := debugfs(t, root, "stat /usr/bin/sudo"); !strings.Contains(s, fmt.Sprintf("ctime: 0x%08x:00000000", od.Epoch.Unix())) {
		t.Errorf("/usr/bin/sudo ctime is not the epoch:\n%s", s)
	}

	// Every entry of RootTree is in the filesystem with its kind, mode, owner and size, and
	// nothing else is there (lost+found aside).
	want, err := RootTree(o)
	if err != nil {
		t.Fatal(err)
	}
	compareListing(t, root, want)

	// Contents: text files byte for byte, and a pseudo-random blob by digest.
	dump := t.TempDir()
	for _, p := range []string{"etc/fstab", "etc/passwd", "etc/group", "etc/shadow", "var/lib/dpkg/status", "usr/bin/bash", "usr/share/zoneinfo/Etc/UTC"} {
		out := filepath.Join(dump, path.Base(p))
		debugfs(t, root, "dump /"+p+" "+out)
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := want.ReadFile(p)
		if !bytes.Equal(got, w) {
			t.Errorf("/%s: %d bytes in the image differ from the %d of RootTree", p, len(got), len(w))
		}
	}
	fstab, _ := want.ReadFile("etc/fstab")
	if !strings.Contains(string(fstab), fmt.Sprintf("PARTUUID=%08x-02  /  ", id.diskID)) {
		t.Errorf("fstab does not mount PARTUUID %08x-02 on /:\n%s", id.diskID, fstab)
	}

	// The boot partition holds exactly BootTree.
	bootWant, err := BootTree(o)
	if err != nil {
		t.Fatal(err)
	}
	compareFAT(t, boot, bootWant)
	cmdline, _ := bootWant.ReadFile("cmdline.txt")
	if !strings.Contains(string(cmdline), fmt.Sprintf(" root=PARTUUID=%08x-02 ", id.diskID)) {
		t.Errorf("cmdline.txt does not name partition 2: %s", cmdline)
	}
}

// checkStat checks an inode's type, permission bits and owner, and returns debugfs's stat.
func checkStat(t *testing.T, fs, p, typ string, mode, uid, gid uint32) string {
	t.Helper()
	s := debugfs(t, fs, "stat "+p)
	m := regexp.MustCompile(`Type: (.+?)\s+Mode:\s+(\d+)`).FindStringSubmatch(s)
	u := regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`).FindStringSubmatch(s)
	if m == nil || u == nil {
		t.Errorf("stat %s: unexpected output:\n%s", p, s)
		return s
	}
	gotMode, _ := strconv.ParseUint(m[2], 8, 32)
	if m[1] != typ || uint32(gotMode) != mode || u[1] != strconv.Itoa(int(uid)) || u[2] != strconv.Itoa(int(gid)) {
		t.Errorf("%s: %s %04o %s:%s, want %s %04o %d:%d", p, m[1], gotMode, u[1], u[2], typ, mode, uid, gid)
	}
	return s
}

func inode(t *testing.T, stat string) string {
	t.Helper()
	m := regexp.MustCompile(`Inode: (\d+)`).FindStringSubmatch(stat)
	if m == nil {
		t.Fatalf("no inode number in:\n%s", stat)
	}
	return m[1]
}

// compareListing lists every directory of want in the ext4 image fs with one debugfs run
// (`ls -p`: /inode/mode/uid/gid/name/size/) and compares the entries.
func compareListing(t *testing.T, fs string, want *tree.Tree) {
	t.Helper()
	var script strings.Builder
	script.WriteString("ls -p /\n")
	type meta struct {
		mode     uint32
		uid, gid uint32
		size     int64
	}
	exp := map[string]meta{}
	_ = want.Walk(func(e *tree.Entry) error {
		if e.Kind == tree.Dir {
			fmt.Fprintf(&script, "ls -p /%s\n", e.Path)
		}
		m := meta{mode: typeBits(e.Kind) | e.Mode, uid: e.UID, gid: e.GID}
		switch e.Kind {
		case tree.Regular:
			m.size = e.Size
		case tree.Symlink:
			m.size = int64(len(e.Linkname))
		case tree.Hardlink:
			tgt := want.Get(e.Linkname)
			m = meta{mode: typeBits(tgt.Kind) | tgt.Mode, uid: tgt.UID, gid: tgt.GID, size: tgt.Size}
		}
		exp[e.Path] = m
		return nil
	})
	f := filepath.Join(t.TempDir(), "ls.cmd")
	if err := os.WriteFile(f, []byte(script.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := testutil.Run(t, "debugfs", "-f", f, fs)
	got := map[string]bool{}
	dir := ""
	for _, l := range strings.Split(out, "\n") {
		if d, ok := strings.CutPrefix(l, "debugfs: ls -p /"); ok {
			dir = d
			continue
		}
		if !strings.HasPrefix(l, "/") {
			continue
		}
		fields := strings.Split(l, "/") // "", ino, mode, uid, gid, name, size, ""
		if len(fields) != 8 {
			t.Errorf("unexpected ls -p line %q", l)
			continue
		}
		name := fields[5]
		if name == "." || name == ".." || (dir == "" && name == "lost+found") {
			continue
		}
		p := path.Join(dir, name)
		got[p] = true
		mode, _ := strconv.ParseUint(fields[2], 8, 32)
		uid, _ := strconv.ParseUint(fields[3], 10, 32)
		gid, _ := strconv.ParseUint(fields[4], 10, 32)
		size, _ := strconv.ParseInt(fields[6], 10, 64)
		e, ok := exp[p]
		if !ok {
			t.Errorf("/%s is in the image but not in RootTree", p)
			continue
		}
		if uint32(mode) != e.mode || uint32(uid) != e.uid || uint32(gid) != e.gid {
			t.Errorf("/%s: mode %o owner %d:%d, want %o %d:%d", p, mode, uid, gid, e.mode, e.uid, e.gid)
		}
		if e.mode&syscall.S_IFMT == syscall.S_IFREG || e.mode&syscall.S_IFMT == syscall.S_IFLNK {
			if size != e.size {
				t.Errorf("/%s: size %d, want %d", p, size, e.size)
			}
		}
	}
	for p := range exp {
		if !got[p] {
			t.Errorf("/%s of RootTree is missing from the image", p)
		}
	}
	if len(got) != len(exp) {
		t.Errorf("image has %d entries, RootTree %d", len(got), len(exp))
	}
}

// compareFAT copies the whole FAT filesystem out with mcopy and compares it with want.
func compareFAT(t *testing.T, fs string, want *tree.Tree) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(testutil.NeedTool(t, "mcopy"), "-s", "-n", "-m", "-i", fs, "::/*", dir+"/")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "TZ=UTC")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mcopy out of the boot partition: %v\n%s", err, out)
	}
	n := 0
	_ = want.Walk(func(e *tree.Entry) error {
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("boot partition: %v", err)
			return nil
		}
		n++
		if !st.ModTime().Equal(e.ModTime) && e.Kind == tree.Regular {
			t.Errorf("boot partition: %s mtime %s, want %s", e.Path, st.ModTime().UTC(), e.ModTime)
		}
		if e.Kind != tree.Regular {
			return nil
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := want.ReadFile(e.Path)
		if !bytes.Equal(got, w) {
			t.Errorf("boot partition: %s differs from BootTree (%d bytes, want %d)", e.Path, len(got), len(w))
		}
		return nil
	})
	var found int
	_ = filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error {
		if p != dir {
			found++
		}
		return nil
	})
	if found != n {
		t.Errorf("boot partition has %d entries, BootTree %d", found, n)
	}
}

func TestGenerateReproducible(t *testing.T) {
	needTools(t)
	a := generate(t, t.TempDir(), smallOptions)
	time.Sleep(1100 * time.Millisecond) // a clock that leaked into the image would now differ
	b := generate(t, t.TempDir(), smallOptions)
	if ha, hb := sha256File(t, a), sha256File(t, b); ha != hb {
		t.Fatalf("two images from the same options differ: %s and %s", ha, hb)
	}
	other := smallOptions
	other.Seed++
	c := generate(t, t.TempDir(), other)
	if sha256File(t, a) == sha256File(t, c) {
		t.Fatal("seeds 7 and 8 gave the same image")
	}
}

// TestGenerateUnprivileged runs Generate as nobody (when the test runs as root, as in CI) and
// expects the very same bytes: nothing in the result may depend on who built it.
func TestGenerateUnprivileged(t *testing.T) {
	if os.Getenv("BASEGEN_HELPER_OUT") != "" {
		if err := Generate(context.Background(), os.Getenv("BASEGEN_HELPER_OUT"), smallOptions); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	needTools(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to an unprivileged user; run unprivileged, every test here is rootless anyway")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// nobody must be able to run a copy of the test binary and write the output.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "basegen.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(dir); d != "/"; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm()&0o001 == 0 {
			t.Skipf("nobody cannot reach %s", d)
		}
	}
	out := filepath.Join(dir, "nobody.img")
	cmd := exec.Command(bin, "-test.run=^TestGenerateUnprivileged$")
	cmd.Env = append(os.Environ(), "BASEGEN_HELPER_OUT="+out, "HOME=/nonexistent")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("Generate as nobody: %v\n%s", err, b)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("%s was not written by nobody", out)
	}
	asRoot := generate(t, t.TempDir(), smallOptions)
	if sha256File(t, out) != sha256File(t, asRoot) {
		t.Fatal("the image made by nobody differs from the one made by root")
	}
}

func TestGenerateNoPartialOutput(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "base.img")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Generate(ctx, out, smallOptions); err == nil {
		t.Fatal("Generate with a cancelled context succeeded")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Fatalf("a failed Generate left %v behind", ents)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{ExtraFiles: -1}, "ExtraFiles"},
		{Options{ExtraBytes: -1}, "ExtraBytes"},
		{Options{ExtraBytes: 10}, "ExtraBytes 10 needs ExtraFiles"},
		{Options{RootSize: 1 << 20}, "RootSize"},
		{Options{BootSize: 8 << 20}, "BootSize"},
		{Options{Epoch: time.Date(1979, 12, 31, 0, 0, 0, 0, time.UTC)}, "Epoch"},
	} {
		err := Generate(context.Background(), filepath.Join(t.TempDir(), "x.img"), tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one naming %q", tc.o, err, tc.want)
		}
	}
}

func TestBenchSizes(t *testing.T) {
	for _, tc := range []struct {
		n     int
		total int64
	}{{1, 0}, {1, 5}, {13, 1000}, {100, 20 << 20}, {20000, 800 << 20}} {
		rng := rand.New(rand.NewPCG(1, 2))
		sizes := benchSizes(rng, tc.n, tc.total)
		var sum int64
		big := 0
		for _, s := range sizes {
			if s < 0 {
				t.Fatalf("n=%d total=%d: negative size %d", tc.n, tc.total, s)
			}
			if s >= mib {
				big++
			}
			sum += s
		}
		if len(sizes) != tc.n || sum != tc.total {
			t.Errorf("n=%d total=%d: got %d sizes summing to %d", tc.n, tc.total, len(sizes), sum)
		}
		if tc.n == 20000 && (big < 100 || big > 1000) {
			t.Errorf("800 MiB over 20000 files: %d files of 1 MiB or more, want a few hundred", big)
		}
	}
}

func TestRootTreeBench(t *testing.T) {
	o := Options{ExtraFiles: 2600, ExtraBytes: 64 << 20}
	rt, err := RootTree(o)
	if err != nil {
		t.Fatal(err)
	}
	base, err := RootTree(Options{})
	if err != nil {
		t.Fatal(err)
	}
	var files int
	var total int64
	dirs := map[string]bool{}
	_ = rt.Walk(func(e *tree.Entry) error {
		if e.Kind == tree.Regular && (strings.HasPrefix(e.Path, "usr/share/bench/") || strings.HasPrefix(e.Path, "usr/lib/bench/")) {
			files++
			total += e.Size
			dirs[path.Dir(e.Path)] = true
		}
		return nil
	})
	if files != o.ExtraFiles || total != o.ExtraBytes {
		t.Errorf("bench: %d files, %d bytes; want %d, %d", files, total, o.ExtraFiles, o.ExtraBytes)
	}
	if len(dirs) != 200 {
		t.Errorf("bench files in %d directories, want 200", len(dirs))
	}
	if base.Get("usr/share/bench") != nil {
		t.Error("a base without ExtraFiles has /usr/share/bench")
	}
	// Content is the entry's size and the same on every read.
	a, _ := rt.ReadFile("usr/bin/bash")
	b, _ := rt.ReadFile("usr/bin/bash")
	if int64(len(a)) != rt.Get("usr/bin/bash").Size || !bytes.Equal(a, b) {
		t.Error("usr/bin/bash content is not stable or not its size")
	}
}

func TestTZUTC(t *testing.T) {
	const host = "/usr/share/zoneinfo/Etc/UTC"
	b, err := os.ReadFile(host)
	if err != nil {
		t.Skipf("no tzdata here: %v", err)
	}
	if string(b) != tzUTC {
		t.Errorf("embedded Etc/UTC (%d bytes) differs from %s (%d bytes)", len(tzUTC), host, len(b))
	}
}
