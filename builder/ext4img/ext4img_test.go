package ext4img

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
)

var testUUID = [16]byte{0x5e, 0x1f, 0x0a, 0x7c, 0x11, 0x22, 0x43, 0x44, 0x85, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc}

const testUUIDString = "5e1f0a7c-1122-4344-8566-778899aabbcc"

// TestWriteRealistic writes a tree with every kind of entry (and a file larger than one
// extent, 128 MiB) at an offset of a disk image and checks it with e2fsprogs.
func TestWriteRealistic(t *testing.T) {
	const bigSize = 130*MiB + 12345
	tr := realisticTree(t, bigSize)
	im := newImage(t, 4*MiB, 200*MiB)
	info := write(t, tr, im, Options{Partition: "system-a", UUID: testUUID, Label: "system-a", Epoch: epoch})
	im.checkGuards(t)

	if info.Size != int64(info.Blocks)*BlockSize || info.Size > im.max || info.Size < bigSize {
		t.Errorf("info %+v: size inconsistent", info)
	}
	if got := fmt.Sprint(info.Skipped); got != "[run/sock]" {
		t.Errorf("skipped %s, want [run/sock]", got)
	}
	entries := 0
	_ = tr.Walk(func(e *tree.Entry) error {
		if e.Kind != tree.Hardlink && e.Kind != tree.Socket {
			entries++
		}
		return nil
	})
	// Inodes 1-11 are reserved (lost+found is 11); every other entry has its own.
	if want := uint32(entries + 11); info.Inodes != want {
		t.Errorf("info.Inodes = %d, want %d", info.Inodes, want)
	}

	img := im.extract(t, info.Size)
	if out, err := fsck(t, img); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}

	t.Run("superblock", func(t *testing.T) {
		out, err := tool(t, "dumpe2fs", "-h", img)
		if err != nil {
			t.Fatalf("dumpe2fs: %v\n%s", err, out)
		}
		for _, want := range []string{
			"Filesystem volume name:   system-a",
			"Filesystem UUID:          " + testUUIDString,
			"Filesystem features:      ext_attr sparse_super2 filetype extent flex_bg large_file huge_file extra_isize read-only",
			"Filesystem created:       Wed May  1 00:00:00 2024",
			"Last write time:          Wed May  1 00:00:00 2024",
			"Last checked:             Wed May  1 00:00:00 2024",
			"Filesystem state:         clean",
			"Maximum mount count:      -1",
			fmt.Sprintf("Block count:              %d", info.Blocks),
		} {
			if !strings.Contains(out, want) {
				t.Errorf("dumpe2fs -h lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "has_journal") || strings.Contains(out, "metadata_csum") {
			t.Errorf("unexpected feature:\n%s", out)
		}
	})

	t.Run("modes and owners", func(t *testing.T) {
		for _, c := range []struct{ path, typ, mode, owner string }{
			{"/bin/ping", "regular", "04755", "User:     0   Group:     0"},
			{"/usr/bin/newgrp", "regular", "02755", "User:     0   Group:    42"},
			{"/tmp", "directory", "01777", "User:     0   Group:     0"},
			{"/empty", "regular", "0600", "User:     0   Group:     0"},
			{"/home/pi", "directory", "0750", "User:  1000   Group:  1000"},
			{"/home/pi/.profile", "regular", "0644", "User:  1000   Group:  1000"},
			{"/home/sub", "directory", "0700", "User: 100000   Group: 165536"},
			{"/run/initctl", "FIFO", "0600", "User:     0   Group:     0"},
			{"/", "directory", "0755", "User:     0   Group:     0"},
		} {
			out := debugfs(t, img, "stat "+c.path)
			if want := fmt.Sprintf("Type: %s    Mode:  %s ", c.typ, c.mode); !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")+" ") {
				t.Errorf("%s: want %q in\n%s", c.path, want, out)
			}
			if !strings.Contains(out, c.owner) {
				t.Errorf("%s: want %q in\n%s", c.path, c.owner, out)
			}
		}
	})

	t.Run("times", func(t *testing.T) {
		for _, c := range []struct{ path, want string }{
			{"/bin/ping", "mtime: 0x386d4380:00000000 -- Sat Jan  1 00:00:00 2000"},
			{"/times/y2040", "mtime: 0x84738b40:1d6f3455 -- Fri Jun  1 12:00:00 2040"},
			{"/times/y2200", "mtime: 0xb0f01dbf:00000002 -- Tue Mar  4 05:06:07 2200"},
			{"/times/y1960", "mtime: 0xee1ff980:00000000 -- Fri Jul  1 00:00:00 1960"},
			{"/", "mtime: 0x66318600:00000000 -- Wed May  1 00:00:00 2024"},
			{"/lost+found", "mtime: 0x66318600:00000000 -- Wed May  1 00:00:00 2024"},
		} {
			out := debugfs(t, img, "stat "+c.path)
			if !strings.Contains(out, c.want) {
				t.Errorf("%s: want %q in\n%s", c.path, c.want, out)
			}
		}
	})

	t.Run("xattrs", func(t *testing.T) {
		out := debugfs(t, img, "ea_list /bin/ping")
		if want := "security.capability (20) = 01 00 00 02 00 20 00 00 00 00 00 00 00 00 00 00 00 00 00 00"; !strings.Contains(out, want) {
			t.Errorf("ea_list /bin/ping: want %q in\n%s", want, out)
		}
		out = debugfs(t, img, "ea_list /etc/many-xattrs")
		for _, k := range manyXattrs {
			if want := fmt.Sprintf("%s (%d) = %q", k, len("v:"+k), "v:"+k); !strings.Contains(out, want) {
				t.Errorf("ea_list /etc/many-xattrs: want %q in\n%s", want, out)
			}
		}
		if got := strings.Count(out, " = "); got != len(manyXattrs) {
			t.Errorf("ea_list /etc/many-xattrs: %d attributes, want %d", got, len(manyXattrs))
		}
		checkXattrBlockSorted(t, img, "/etc/many-xattrs", true)
	})

	t.Run("hard links", func(t *testing.T) {
		a := debugfs(t, img, "stat /usr/lib/libx.so.1")
		b := debugfs(t, img, "stat /opt/x/libx-link")
		ia, ib := inodeNumber(t, a), inodeNumber(t, b)
		if ia != ib {
			t.Errorf("hard links have inodes %d and %d", ia, ib)
		}
		if !strings.Contains(a, "Links: 2 ") {
			t.Errorf("want Links: 2 in\n%s", a)
		}
	})

	t.Run("devices", func(t *testing.T) {
		for _, c := range []struct {
			path, typ  string
			major, min int
		}{
			{"/dev/null", "character special", 1, 3},
			{"/dev/sda", "block special", 8, 0},
			{"/dev/nvme0n1p9", "block special", 259, 300000},
		} {
			out := debugfs(t, img, "stat "+c.path)
			dev := fmt.Sprintf("Device major/minor number: %02d:%02d ", c.major, c.min)
			if !strings.Contains(out, "Type: "+c.typ) || !strings.Contains(out, dev) {
				t.Errorf("%s: want %s %q in\n%s", c.path, c.typ, dev, out)
			}
		}
	})

	t.Run("symlinks", func(t *testing.T) {
		out := debugfs(t, img, "stat /lib")
		if !strings.Contains(out, `Fast link dest: "usr/lib"`) {
			t.Errorf("stat /lib:\n%s", out)
		}
		long := tr.Get("etc/long-link").Linkname
		out = debugfs(t, img, "stat /etc/long-link")
		if !strings.Contains(out, "Type: symlink") || !strings.Contains(out, fmt.Sprintf("Size: %d", len(long))) {
			t.Errorf("stat /etc/long-link:\n%s", out)
		}
		if got := catFile(t, img, "/etc/long-link"); got != long {
			t.Errorf("long symlink target %q, want %q", got, long)
		}
	})

	t.Run("contents", func(t *testing.T) {
		for _, p := range []string{"bin/ping", "usr/lib/libx.so.1", "opt/x/libx-link", "a/b/c/d/e/f/g/deep.txt", "empty", "usr/share/many/entry-xxxx4"} {
			want, err := tr.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := catFile(t, img, "/"+p); got != string(want) {
				t.Errorf("%s: content %q, want %q", p, got, want)
			}
		}
		// The large file spans two extents.
		out := filepath.Join(t.TempDir(), "big")
		debugfs(t, img, "dump /var/big.img "+out)
		if got, want := fileSum(t, out), patternSum(t, bigSize); got != want {
			t.Errorf("/var/big.img: sha256 %s, want %s", got, want)
		}
	})

	t.Run("large directory", func(t *testing.T) {
		out := debugfs(t, img, "ls -p /usr/share/many")
		if n := strings.Count(out, "/entry-"); n != 5000 {
			t.Errorf("/usr/share/many has %d entries, want 5000", n)
		}
	})
}

func inodeNumber(t *testing.T, stat string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(stat[strings.Index(stat, "Inode:"):]), "Inode: %d", &n); err != nil {
		t.Fatalf("no inode number in %q: %v", stat, err)
	}
	return n
}

func catFile(t *testing.T, img, p string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "cat")
	debugfs(t, img, "dump "+p+" "+out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	im := &image{f: f}
	return im.sum(t, st.Size())
}

// checkXattrBlockSorted reads the external xattr block of p and checks (want true) or
// refutes (want false) that its entries are in the kernel's lookup order.
func checkXattrBlockSorted(t *testing.T, img, p string, want bool) {
	t.Helper()
	out := debugfs(t, img, "stat "+p)
	m := regexp.MustCompile(`File ACL: (\d+)`).FindStringSubmatch(out)
	if m == nil || m[1] == "0" {
		t.Fatalf("%s has no xattr block:\n%s", p, out)
	}
	var blk int64
	fmt.Sscan(m[1], &blk)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, BlockSize)
	if _, err := f.ReadAt(b, blk*BlockSize); err != nil {
		t.Fatal(err)
	}
	var es []xattrEntry
	var names []string
	for q := xattrHdrSize; binary.LittleEndian.Uint32(b[q:]) != 0; {
		n := int(b[q])
		es = append(es, xattrEntry{index: b[q+1], name: b[q+16 : q+16+n]})
		names = append(names, fmt.Sprintf("%d:%s", b[q+1], b[q+16:q+16+n]))
		q += (16 + n + 3) &^ 3
	}
	sorted := true
	for i := 1; i < len(es); i++ {
		if xattrLess(es[i], es[i-1]) {
			sorted = false
		}
	}
	if sorted != want {
		t.Errorf("xattr block of %s sorted=%v, want %v: %v", p, sorted, want, names)
	}
}

// TestFixes shows, on the same tree, what tar2ext4 alone leaves wrong and that Write fixes it.
func TestFixes(t *testing.T) {
	tr := realisticTree(t, 0)
	rawIm := newImage(t, 0, 64*MiB)
	win := &window{dst: rawIm.f, max: rawIm.max}
	if _, err := convert(context.Background(), tr, win); err != nil {
		t.Fatal(err)
	}
	raw := rawIm.extract(t, win.high)
	im := newImage(t, 0, 64*MiB)
	info := write(t, tr, im, Options{UUID: testUUID, Label: "sys", Epoch: epoch})
	fixed := im.extract(t, info.Size)
	rawFsck, rawErr := fsck(t, raw)
	fixedFsck, fixedErr := fsck(t, fixed)
	if fixedErr != nil {
		t.Fatalf("e2fsck -fn after the fixes: %v\n%s", fixedErr, fixedFsck)
	}

	t.Run("inode bitmap padding", func(t *testing.T) {
		const msg = "Padding at end of inode bitmap is not set"
		if rawErr == nil || !strings.Contains(rawFsck, msg) {
			t.Errorf("tar2ext4 output no longer lacks the padding (the fix may be dropped):\n%s", rawFsck)
		}
		if strings.Contains(fixedFsck, msg) {
			t.Errorf("padding still unset:\n%s", fixedFsck)
		}
	})

	t.Run("times after 2038", func(t *testing.T) {
		if out := debugfs(t, raw, "stat /times/y2040"); !strings.Contains(out, "1904") {
			t.Errorf("tar2ext4 no longer stores 2040 as 1904 (the fix may be dropped):\n%s", out)
		}
		if out := debugfs(t, fixed, "stat /times/y2040"); !strings.Contains(out, "mtime: 0x84738b40:1d6f3455 -- Fri Jun  1 12:00:00 2040") {
			t.Errorf("2040 not stored as 2040:\n%s", out)
		}
	})

	t.Run("times before 1970", func(t *testing.T) {
		const msg = "are likely pre-1970"
		if !strings.Contains(rawFsck, msg) {
			t.Errorf("tar2ext4 output no longer has the pre-1970 encoding problem:\n%s", rawFsck)
		}
		if out := debugfs(t, fixed, "stat /times/y1960"); !strings.Contains(out, "Fri Jul  1 00:00:00 1960") {
			t.Errorf("1960 not stored as 1960:\n%s", out)
		}
	})

	t.Run("xattr block order", func(t *testing.T) {
		checkXattrBlockSorted(t, raw, "/etc/many-xattrs", false)
		checkXattrBlockSorted(t, fixed, "/etc/many-xattrs", true)
	})

	t.Run("root and lost+found times", func(t *testing.T) {
		for _, p := range []string{"/", "/lost+found"} {
			if out := debugfs(t, raw, "stat "+p); !strings.Contains(out, "mtime: 0x00000000:00000000") {
				t.Errorf("tar2ext4 no longer leaves %s at time 0:\n%s", p, out)
			}
			if out := debugfs(t, fixed, "stat "+p); !strings.Contains(out, "Wed May  1 00:00:00 2024") {
				t.Errorf("%s does not have the epoch as time:\n%s", p, out)
			}
		}
		// A lost+found in the tree keeps its own metadata.
		tr2 := tree.New()
		put(t, tr2, &tree.Entry{Path: "lost+found", Kind: tree.Dir, Mode: 0o700})
		im2 := newImage(t, 0, 8*MiB)
		info2 := write(t, tr2, im2, Options{Epoch: epoch})
		if out := debugfs(t, im2.extract(t, info2.Size), "stat /lost+found"); !strings.Contains(out, "Sat Jan  1 00:00:00 2000") {
			t.Errorf("lost+found from the tree lost its time:\n%s", out)
		}
	})

	t.Run("superblock identity", func(t *testing.T) {
		rawSB, _ := tool(t, "dumpe2fs", "-h", raw)
		if !strings.Contains(rawSB, "Filesystem UUID:          <none>") || strings.Contains(rawSB, "Filesystem created:") {
			t.Errorf("tar2ext4 now stamps the superblock itself:\n%s", rawSB)
		}
		fixedSB, _ := tool(t, "dumpe2fs", "-h", fixed)
		for _, want := range []string{"Filesystem UUID:          " + testUUIDString, "Filesystem volume name:   sys", "Filesystem created:       Wed May  1 00:00:00 2024"} {
			if !strings.Contains(fixedSB, want) {
				t.Errorf("want %q in\n%s", want, fixedSB)
			}
		}
	})
}

func TestReproducible(t *testing.T) {
	sums := map[string]string{}
	for _, c := range []struct {
		name  string
		procs int
		uuid  byte
	}{{"a", 1, 1}, {"b", runtime.NumCPU() + 3, 1}, {"other-uuid", 2, 2}} {
		old := runtime.GOMAXPROCS(c.procs)
		tr := realisticTree(t, 3*MiB)
		im := newImage(t, 1*MiB, 48*MiB)
		info := write(t, tr, im, Options{UUID: [16]byte{c.uuid}, Label: "r", Epoch: epoch})
		runtime.GOMAXPROCS(old)
		sums[c.name] = im.sum(t, im.max)
		if info.Size >= im.max {
			t.Fatalf("test tree fills the window")
		}
	}
	if sums["a"] != sums["b"] {
		t.Errorf("same tree, same options, different bytes: %s vs %s", sums["a"], sums["b"])
	}
	if sums["a"] == sums["other-uuid"] {
		t.Errorf("a different UUID gave the same bytes")
	}
}

func TestTooSmall(t *testing.T) {
	tr := realisticTree(t, 2*MiB)
	big := newImage(t, 0, 64*MiB)
	need := write(t, tr, big, Options{}).Size

	for _, max := range []int64{need - BlockSize, 4 * MiB, 3 * BlockSize} {
		im := newImage(t, 2*MiB, max)
		_, err := Write(context.Background(), tr, im.f, im.off, im.max, Options{Partition: "system-b"})
		if !errors.Is(err, ErrTooSmall) {
			t.Fatalf("max %d: error %v, want ErrTooSmall", max, err)
		}
		for _, want := range []string{"partition system-b", fmt.Sprintf("needs %d bytes", need), fmt.Sprintf("partition has %d bytes", max)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		im.checkGuards(t)
	}
	// Exactly enough is enough.
	im := newImage(t, 2*MiB, need)
	if got := write(t, tr, im, Options{}).Size; got != need {
		t.Errorf("size %d in a window of exactly %d", got, need)
	}
	im.checkGuards(t)
}

func TestWriteErrors(t *testing.T) {
	im := newImage(t, 0, 8*MiB)
	tr := tree.New()
	put(t, tr, &tree.Entry{Path: "etc/hostname", Kind: tree.Regular, Mode: 0o644, Size: 3, Content: tree.Bytes("pi\n")})

	if _, err := Write(context.Background(), tr, im.f, 0, im.max, Options{Partition: "system-a", Label: "a-label-longer-than-16"}); err == nil || !strings.Contains(err.Error(), "partition system-a: label") {
		t.Errorf("long label: %v", err)
	}

	old := tree.New()
	put(t, old, &tree.Entry{Path: "ancient", Kind: tree.Regular, Mode: 0o644, ModTime: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)})
	if _, err := Write(context.Background(), old, im.f, 0, im.max, Options{}); err == nil || !strings.Contains(err.Error(), "ancient: mtime") {
		t.Errorf("mtime in 1900: %v", err)
	}
	zero := tree.New()
	if err := zero.Put(&tree.Entry{Path: "zero", Kind: tree.Regular, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(context.Background(), zero, im.f, 0, im.max, Options{}); err == nil || !strings.Contains(err.Error(), "zero: mtime") {
		t.Errorf("zero mtime: %v", err)
	}

	missing := tree.New()
	put(t, missing, &tree.Entry{Path: "usr/bin/gone", Kind: tree.Regular, Mode: 0o755, Size: 10, Content: tree.File(filepath.Join(t.TempDir(), "nope"))})
	if _, err := Write(context.Background(), missing, im.f, 0, im.max, Options{Partition: "system-a"}); err == nil || !strings.Contains(err.Error(), "usr/bin/gone") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing content: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Write(ctx, realisticTree(t, 0), im.f, 0, im.max, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}

	short := tree.New()
	put(t, short, &tree.Entry{Path: "short", Kind: tree.Regular, Mode: 0o644, Size: 100, Content: tree.Bytes("only 11 b\n")})
	if _, err := Write(context.Background(), short, im.f, 0, im.max, Options{}); err == nil || !strings.Contains(err.Error(), "short") {
		t.Errorf("short content: %v", err)
	}
}

func TestEncodeTime(t *testing.T) {
	// compactext4's encoding, copied from its timeToFsTime.
	compact := func(tm time.Time) (uint32, uint32) {
		s := tm.Unix()
		if s < -0x80000000 {
			s = 0x80000000
		} else if s > 0x37fffffff {
			s = 0x37fffffff
		}
		v := uint64(s) | uint64(tm.Nanosecond())<<34
		return uint32(v), uint32(v >> 32)
	}
	for _, tm := range []time.Time{
		time.Unix(0, 0), time.Unix(1, 5), t2000, t2040, t2200, t1960,
		time.Unix(1<<31-1, 999999999), time.Unix(1<<31, 0), time.Unix(1<<32-1, 1), time.Unix(1<<32, 0),
		time.Unix(1<<32+1<<31, 7), time.Unix(0x37fffffff, 999999999), time.Unix(-1, 0), time.Unix(-1<<31, 0),
	} {
		lo, ex := fixTime(compact(tm))
		got := decodeTime(lo, ex)
		want := tm
		if tm.Unix() < 0 {
			want = time.Unix(tm.Unix(), 0) // compactext4 loses the nanoseconds before 1970
		}
		if !got.Equal(want) {
			t.Errorf("%s (%d): stored as %#x:%#x, reads back as %s", tm.UTC(), tm.Unix(), lo, ex, got.UTC())
		}
		if l2, e2 := encodeTime(tm.Unix(), uint32(tm.Nanosecond())); !decodeTime(l2, e2).Equal(tm) {
			t.Errorf("encodeTime(%s) round trip gives %s", tm.UTC(), decodeTime(l2, e2).UTC())
		}
	}
}

func TestSetPadding(t *testing.T) {
	b := make([]byte, 8)
	b[0] = 0b101
	if !setPadding(b, 13) {
		t.Fatal("no change reported")
	}
	want := []byte{0b101, 0b11100000, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if string(b) != string(want) {
		t.Errorf("got %08b, want %08b", b, want)
	}
	if setPadding(b, 13) {
		t.Error("second call reported a change")
	}
}

func TestWindow(t *testing.T) {
	im := newImage(t, MiB, 2*BlockSize)
	w := &window{dst: im.f, off: im.off, max: im.max}
	data := make([]byte, 3*BlockSize)
	for i := range data {
		data[i] = byte(i%251) + 1
	}
	if n, err := w.Write(data); n != len(data) || err != nil {
		t.Fatalf("write: %d %v", n, err)
	}
	if w.high != 3*BlockSize {
		t.Errorf("high %d", w.high)
	}
	im.checkGuards(t)
	if _, err := w.Seek(BlockSize, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2*BlockSize)
	if n, err := io.ReadFull(w, got); n != len(got) || err != nil {
		t.Fatal(n, err)
	}
	if string(got[:BlockSize]) != string(data[BlockSize:2*BlockSize]) {
		t.Error("read back differs inside the window")
	}
	for _, c := range got[BlockSize:] {
		if c != 0 {
			t.Fatal("bytes past the window read back non-zero")
		}
	}
}
