package base

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

// capNetRaw is a version 2 security.capability value for cap_net_raw=ep.
var capNetRaw = []byte{
	0x01, 0x00, 0x00, 0x02, // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
	0x00, 0x20, 0x00, 0x00, // permitted[0]: CAP_NET_RAW (13)
	0x00, 0x00, 0x00, 0x00, // inheritable[0]
	0x00, 0x00, 0x00, 0x00, // permitted[1]
	0x00, 0x00, 0x00, 0x00, // inheritable[1]
}

// want describes one entry of a generated root filesystem, and is what reading it back must give.
type want struct {
	path     string
	kind     tree.Kind
	mode     uint32
	uid, gid uint32
	mtime    time.Time
	data     []byte // regular files
	link     string // symlink target, or hard link target
	major    uint32
	minor    uint32
	xattrs   map[string]string
}

func pseudoRandom(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// rootSpec is the reference root filesystem: every kind of entry and metadata RootFS must keep.
func rootSpec() []want {
	t0 := time.Unix(1700000000, 0).UTC()
	longTarget := "../../some/very/long/target/path/that/does/not/fit/in/the/inode/itself/" + strings.Repeat("x", 40)
	ws := []want{
		{path: "bin", kind: tree.Symlink, mode: 0o777, link: "usr/bin", mtime: t0},
		{path: "dev", kind: tree.Dir, mode: 0o755, mtime: t0},
		{path: "dev/null", kind: tree.CharDev, mode: 0o666, major: 1, minor: 3, mtime: t0},
		{path: "dev/sda1", kind: tree.BlockDev, mode: 0o660, gid: 6, major: 8, minor: 1, mtime: t0},
		{path: "dev/big", kind: tree.CharDev, mode: 0o600, major: 300, minor: 1000, mtime: t0},
		{path: "etc", kind: tree.Dir, mode: 0o755, mtime: t0.Add(time.Hour)},
		{path: "etc/passwd", kind: tree.Regular, mode: 0o644, data: []byte("root:x:0:0:root:/root:/bin/bash\n"), mtime: t0},
		{path: "etc/shadow", kind: tree.Regular, mode: 0o640, gid: 42, data: []byte("root:*:19000:0:99999:7:::\n"), mtime: t0},
		{path: "etc/empty.conf", kind: tree.Regular, mode: 0o600, uid: 1000, gid: 1000, data: []byte{}, mtime: t0},
		{path: "etc/nanos", kind: tree.Regular, mode: 0o644, data: []byte("x"), mtime: time.Unix(1700000000, 123456789).UTC()},
		{path: "etc/note", kind: tree.Regular, mode: 0o644, data: []byte("xattr here\n"), mtime: t0, xattrs: map[string]string{"user.comment": "hello"}},
		{path: "etc/alternatives", kind: tree.Dir, mode: 0o755, mtime: t0},
		{path: "etc/alternatives/long", kind: tree.Symlink, mode: 0o777, link: longTarget, mtime: t0},
		{path: "etc/alternatives/dangling", kind: tree.Symlink, mode: 0o777, link: "/nonexistent", mtime: t0},
		{path: "home", kind: tree.Dir, mode: 0o755, mtime: t0},
		{path: "home/pi", kind: tree.Dir, mode: 0o700, uid: 1000, gid: 1000, mtime: t0},
		{path: "home/pi/big.bin", kind: tree.Regular, mode: 0o644, uid: 1000, gid: 1000, data: pseudoRandom(3<<20+123, 7), mtime: t0},
		{path: "lost+found", kind: tree.Dir, mode: 0o700, mtime: t0},
		{path: "run", kind: tree.Dir, mode: 0o755, mtime: t0},
		{path: "run/fifo", kind: tree.FIFO, mode: 0o620, uid: 5, gid: 7, mtime: t0},
		{path: "run/sock", kind: tree.Socket, mode: 0o755, mtime: t0},
		{path: "tmp", kind: tree.Dir, mode: 0o1777, mtime: t0},
		{path: "usr", kind: tree.Dir, mode: 0o755, mtime: t0},
		{path: "usr/bin", kind: tree.Dir, mode: 0o755, mtime: t0},
		{path: "usr/bin/ping", kind: tree.Regular, mode: 0o755, data: []byte("\x7fELF ping"), mtime: t0, xattrs: map[string]string{"security.capability": string(capNetRaw)}},
		{path: "usr/bin/sudo", kind: tree.Regular, mode: 0o4755, data: []byte("\x7fELF sudo"), mtime: t0},
		{path: "usr/bin/wall", kind: tree.Regular, mode: 0o2755, gid: 5, data: []byte("\x7fELF wall"), mtime: t0},
		{path: "usr/bin/all", kind: tree.Regular, mode: 0o7777, uid: 65534, gid: 70000, data: []byte("all bits"), mtime: t0},
		{path: "usr/bin/perl", kind: tree.Regular, mode: 0o755, data: []byte("\x7fELF perl"), mtime: t0},
		{path: "usr/bin/perl5.36", kind: tree.Hardlink, link: "usr/bin/perl"},
		{path: "usr/bin/perl5.36.0", kind: tree.Hardlink, link: "usr/bin/perl"},
		{path: "usr/share", kind: tree.Dir, mode: 0o755, mtime: t0},
		{path: "usr/share/many", kind: tree.Dir, mode: 0o755, mtime: t0},
	}
	for i := 0; i < 400; i++ {
		ws = append(ws, want{path: fmt.Sprintf("usr/share/many/file-%04d.txt", i), kind: tree.Regular, mode: 0o644,
			data: []byte(fmt.Sprintf("file %d\n", i)), mtime: t0})
	}
	return ws
}

var typeBits = map[tree.Kind]uint32{
	tree.Regular: 0o100000, tree.Dir: 0o40000, tree.Symlink: 0o120000, tree.CharDev: 0o20000,
	tree.BlockDev: 0o60000, tree.FIFO: 0o10000, tree.Socket: 0o140000,
}

// makeExt4 builds an ext4 image of sizeMiB from ws with mke2fs -d and fixes up what a
// rootless mke2fs cannot express (ownership, special bits, devices, hard links, xattrs) with
// debugfs -w, then indexes the directories with e2fsck -D.
func makeExt4(t testing.TB, ws []want, sizeMiB int) string {
	t.Helper()
	return makeExt4With(t, ws, sizeMiB, "-b", "4096")
}

// makeExt4With is makeExt4 with other mke2fs options (block size, features).
func makeExt4With(t testing.TB, ws []want, sizeMiB int, mkfsArgs ...string) string {
	t.Helper()
	mke2fs := testutil.NeedTool(t, "mke2fs")
	debugfs := testutil.NeedTool(t, "debugfs")
	e2fsck := testutil.NeedTool(t, "e2fsck")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	links := map[string]int{}
	for _, w := range ws {
		p := filepath.Join(src, w.path)
		switch w.kind {
		case tree.Dir:
			if w.path != "lost+found" {
				mustDo(t, os.MkdirAll(p, 0o755))
			}
		case tree.Regular:
			mustDo(t, os.MkdirAll(filepath.Dir(p), 0o755))
			mustDo(t, os.WriteFile(p, w.data, 0o644))
		case tree.Symlink:
			mustDo(t, os.Symlink(w.link, p))
		case tree.Socket:
			l, err := net.Listen("unix", p)
			if err != nil {
				t.Skipf("cannot create a unix socket at %s: %v", p, err)
			}
			defer l.Close()
		case tree.CharDev:
			fmt.Fprintf(&script, "cd /%s\nmknod %s c %d %d\ncd /\n", filepath.Dir(w.path), filepath.Base(w.path), w.major, w.minor)
		case tree.BlockDev:
			fmt.Fprintf(&script, "cd /%s\nmknod %s b %d %d\ncd /\n", filepath.Dir(w.path), filepath.Base(w.path), w.major, w.minor)
		case tree.FIFO:
			fmt.Fprintf(&script, "cd /%s\nmknod %s p\ncd /\n", filepath.Dir(w.path), filepath.Base(w.path))
		case tree.Hardlink:
			fmt.Fprintf(&script, "ln /%s /%s\n", w.link, w.path)
			links[w.link]++
			continue
		}
		fmt.Fprintf(&script, "sif /%s mode 0%o\n", w.path, typeBits[w.kind]|w.mode)
		fmt.Fprintf(&script, "sif /%s uid %d\nsif /%s gid %d\n", w.path, w.uid, w.path, w.gid)
		fmt.Fprintf(&script, "sif /%s mtime @%d\n", w.path, w.mtime.Unix())
		fmt.Fprintf(&script, "sif /%s mtime_extra %d\n", w.path, uint32(w.mtime.Nanosecond())<<2)
		keys := make([]string, 0, len(w.xattrs))
		for k := range w.xattrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			vf := filepath.Join(dir, fmt.Sprintf("xattr-%d", script.Len()))
			mustDo(t, os.WriteFile(vf, []byte(w.xattrs[k]), 0o644))
			fmt.Fprintf(&script, "ea_set -f %s /%s %s\n", vf, w.path, k)
		}
	}
	for target, n := range links {
		fmt.Fprintf(&script, "sif /%s links_count %d\n", target, n+1)
	}
	img := filepath.Join(dir, "root.ext4")
	args := append([]string{"-q", "-F", "-t", "ext4"}, mkfsArgs...)
	args = append(args, "-U", "4f3d1a2b-0000-4000-8000-000000000001",
		"-E", "hash_seed=4f3d1a2b-0000-4000-8000-000000000002", "-d", src, img, fmt.Sprintf("%dM", sizeMiB))
	testutil.Run(t, mke2fs, args...)
	sf := filepath.Join(dir, "debugfs.script")
	mustDo(t, os.WriteFile(sf, []byte(script.String()), 0o644))
	out := testutil.Run(t, debugfs, "-w", "-f", sf, img)
	for _, line := range strings.Split(out, "\n") {
		if line != "" && !strings.HasPrefix(line, "debugfs") && !strings.HasPrefix(line, "Allocated inode") {
			t.Fatalf("debugfs complained: %s\n%s", line, out)
		}
	}
	// e2fsck -D builds hash-tree indexes for the big directory; exit status 1 means it changed something.
	cmd := exec.Command(e2fsck, "-fyD", img)
	if out, err := cmd.CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck -fyD: %v\n%s", err, out)
		}
	}
	testutil.Run(t, e2fsck, "-fn", img)
	return img
}

// bootSpec is the reference boot partition.
type bootFile struct {
	path  string
	data  []byte
	mtime time.Time
}

func bootSpec() []bootFile {
	t0 := time.Date(2024, 3, 15, 10, 20, 30, 0, time.UTC)
	return []bootFile{
		{"config.txt", []byte("arm_64bit=1\nkernel=kernel8.img\n"), t0},
		{"cmdline.txt", []byte("console=serial0,115200 root=PARTUUID=12345678-02 rootwait\n"), t0.Add(2 * time.Second)},
		{"kernel8.img", pseudoRandom(2<<20+77, 3), t0},
		{"start4.elf", pseudoRandom(300000, 4), t0},
		{"Mixed Case Long Name.dat", []byte("lfn"), t0},
		{"overlays/vc4-kms-v3d.dtbo", pseudoRandom(5000, 5), t0},
		{"overlays/README", []byte("overlays\n"), t0},
		{"empty.txt", []byte{}, t0},
	}
}

// makeFAT builds a FAT image with mkfs.vfat and mtools; frag makes kernel8.img fragmented.
func makeFAT(t testing.TB, files []bootFile, fatBits int) string {
	return makeFATSize(t, files, fatBits, 40)
}

func makeFATSize(t testing.TB, files []bootFile, fatBits, sizeMiB int) string {
	t.Helper()
	mkfs := testutil.NeedTool(t, "mkfs.vfat")
	mcopy := testutil.NeedTool(t, "mcopy")
	mmd := testutil.NeedTool(t, "mmd")
	mdel := testutil.NeedTool(t, "mdel")
	dir := t.TempDir()
	img := filepath.Join(dir, "boot.vfat")
	f, err := os.Create(img)
	mustDo(t, err)
	mustDo(t, f.Truncate(int64(sizeMiB)<<20))
	mustDo(t, f.Close())
	spc := "1"
	if fatBits == 16 {
		spc = "4"
	}
	testutil.Run(t, mkfs, "-F", fmt.Sprint(fatBits), "-s", spc, "-S", "512", "-n", "BOOT", "-i", "12345678", img)
	run := func(tool string, args ...string) {
		cmd := exec.Command(tool, args...)
		cmd.Env = append(os.Environ(), "TZ=UTC", "MTOOLS_SKIP_CHECK=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", tool, args, err, out)
		}
	}
	// A filler file deleted later leaves a hole, so the big file written afterwards is fragmented.
	filler := filepath.Join(dir, "filler")
	mustDo(t, os.WriteFile(filler, pseudoRandom(100000, 9), 0o644))
	run(mcopy, "-i", img, filler, "::/filler")
	run(mcopy, "-i", img, filler, "::/filler2")
	run(mdel, "-i", img, "::/filler")
	made := map[string]bool{}
	for _, bf := range files {
		d := filepath.Dir(bf.path)
		if d != "." && !made[d] {
			run(mmd, "-i", img, "::/"+d)
			made[d] = true
		}
		p := filepath.Join(dir, "src", bf.path)
		mustDo(t, os.MkdirAll(filepath.Dir(p), 0o755))
		mustDo(t, os.WriteFile(p, bf.data, 0o644))
		mustDo(t, os.Chtimes(p, bf.mtime, bf.mtime))
		run(mcopy, "-m", "-i", img, p, "::/"+bf.path)
	}
	run(mdel, "-i", img, "::/filler2")
	return img
}

// assemble writes a partition table with sfdisk into a sparse image and copies the
// partition images into place.
func assemble(t testing.TB, label string, parts []string, types []string) string {
	t.Helper()
	sfdisk := testutil.NeedTool(t, "sfdisk")
	dir := t.TempDir()
	img := filepath.Join(dir, "base.img")
	var script strings.Builder
	fmt.Fprintf(&script, "label: %s\nunit: sectors\n", label)
	if label == "dos" {
		script.WriteString("label-id: 0x12345678\n")
	}
	start := int64(2048)
	var starts []int64
	for i, p := range parts {
		st, err := os.Stat(p)
		mustDo(t, err)
		secs := (st.Size() + 511) / 512
		fmt.Fprintf(&script, "start=%d, size=%d, type=%s\n", start, secs, types[i])
		starts = append(starts, start*512)
		start += (secs + 2047) / 2048 * 2048
	}
	f, err := os.Create(img)
	mustDo(t, err)
	mustDo(t, f.Truncate(start*512+1<<20))
	mustDo(t, f.Close())
	cmd := exec.Command(sfdisk, "--no-reread", "--no-tell-kernel", img)
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s\n%s", err, script.String(), out)
	}
	out, err := os.OpenFile(img, os.O_WRONLY, 0)
	mustDo(t, err)
	defer out.Close()
	for i, p := range parts {
		in, err := os.Open(p)
		mustDo(t, err)
		_, err = io.Copy(io.NewOffsetWriter(out, starts[i]), in)
		in.Close()
		mustDo(t, err)
	}
	return img
}

func mustDo(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// listing is a canonical description of every entry of t, content hashes included.
func listing(t testing.TB, tr *tree.Tree) []string {
	t.Helper()
	var out []string
	err := tr.Walk(func(e *tree.Entry) error {
		line := fmt.Sprintf("%s %s %04o %d:%d %d size=%d link=%q dev=%d,%d", e.Path, e.Kind, e.Mode, e.UID, e.GID,
			e.ModTime.UnixNano(), e.Size, e.Linkname, e.Devmajor, e.Devminor)
		keys := make([]string, 0, len(e.Xattrs))
		for k := range e.Xattrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			line += fmt.Sprintf(" %s=%x", k, e.Xattrs[k])
		}
		if e.Kind == tree.Regular {
			h, n := hashContent(t, e)
			if n != e.Size {
				return fmt.Errorf("%s: content has %d bytes, entry says %d", e.Path, n, e.Size)
			}
			line += " sha256=" + h
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func hashContent(t testing.TB, e *tree.Entry) (string, int64) {
	t.Helper()
	if e.Content == nil {
		return hex.EncodeToString(sha256.New().Sum(nil)), 0
	}
	rc, err := e.Content.Open()
	if err != nil {
		t.Fatalf("%s: %v", e.Path, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatalf("%s: %v", e.Path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
