package ext4img

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

const MiB = 1 << 20

var (
	t2000 = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	t2040 = time.Date(2040, 6, 1, 12, 0, 0, 123456789, time.UTC)
	t2200 = time.Date(2200, 3, 4, 5, 6, 7, 0, time.UTC)
	t1960 = time.Date(1960, 7, 1, 0, 0, 0, 0, time.UTC)
	epoch = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
)

// pattern is deterministic content: mostly zeros with a numbered marker every 64 KiB, the
// kind of file a sparse disk image holds.
type pattern struct{ off, size int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	if int64(len(b)) > p.size-p.off {
		b = b[:p.size-p.off]
	}
	for i := range b {
		o := p.off + int64(i)
		switch {
		case o%65536 < 8:
			b[i] = byte((o / 65536) >> (8 * (o % 8)))
		case o%65536 == 8:
			b[i] = 0xA5
		default:
			b[i] = 0
		}
	}
	p.off += int64(len(b))
	return len(b), nil
}

func patternContent(size int64) tree.Content {
	return tree.Func(func() (io.ReadCloser, error) { return io.NopCloser(&pattern{size: size}), nil })
}

func patternSum(t testing.TB, size int64) string {
	h := sha256.New()
	if _, err := io.Copy(h, &pattern{size: size}); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

var manyXattrs = []string{"security.ab", "security.b", "security.bb", "security.c", "security.cc", "trusted.ab",
	"trusted.aba", "trusted.abbc", "trusted.bbaa", "trusted.ca", "trusted.cc", "user.acca", "user.b", "user.ba", "user.bcc", "user.cccc"}

// capPing is a VFS_CAP_REVISION_2 security.capability granting cap_net_raw (13), effective.
var capPing = []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

func put(t testing.TB, tr *tree.Tree, e *tree.Entry) {
	t.Helper()
	if e.ModTime.IsZero() {
		e.ModTime = t2000
	}
	if err := tr.Put(e); err != nil {
		t.Fatal(err)
	}
}

// realisticTree is a root file system with every kind of entry and metadata ext4 must keep.
// bigSize is the size of the one large file (0 for none).
func realisticTree(t testing.TB, bigSize int64) *tree.Tree {
	tr := tree.New()
	put(t, tr, &tree.Entry{Path: "bin", Kind: tree.Dir, Mode: 0o755})
	put(t, tr, &tree.Entry{Path: "bin/ping", Kind: tree.Regular, Mode: 0o4755, Size: 5, Content: tree.Bytes("ping\n"),
		Xattrs: map[string][]byte{"security.capability": capPing}})
	put(t, tr, &tree.Entry{Path: "usr/bin/newgrp", Kind: tree.Regular, Mode: 0o2755, GID: 42, Size: 3, Content: tree.Bytes("ng\n")})
	put(t, tr, &tree.Entry{Path: "tmp", Kind: tree.Dir, Mode: 0o1777})
	put(t, tr, &tree.Entry{Path: "a/b/c/d/e/f/g/deep.txt", Kind: tree.Regular, Mode: 0o644, Size: 5, Content: tree.Bytes("deep\n")})
	put(t, tr, &tree.Entry{Path: "empty", Kind: tree.Regular, Mode: 0o600})
	put(t, tr, &tree.Entry{Path: "etc/empty.conf", Kind: tree.Regular, Mode: 0o644})
	// Hard links across directories.
	put(t, tr, &tree.Entry{Path: "usr/lib/libx.so.1", Kind: tree.Regular, Mode: 0o755, Size: 6000, Content: patternContent(6000)})
	put(t, tr, &tree.Entry{Path: "opt/x/libx-link", Kind: tree.Hardlink, Linkname: "usr/lib/libx.so.1"})
	// Symlinks: fast (in the inode) and slow (> 60 bytes, in a block).
	put(t, tr, &tree.Entry{Path: "lib", Kind: tree.Symlink, Mode: 0o777, Linkname: "usr/lib"})
	long := "/usr/share/" + strings.Repeat("very-long-directory-name/", 4) + "target"
	put(t, tr, &tree.Entry{Path: "etc/long-link", Kind: tree.Symlink, Mode: 0o777, Linkname: long})
	// Devices, a FIFO, a socket (skipped).
	put(t, tr, &tree.Entry{Path: "dev/null", Kind: tree.CharDev, Mode: 0o666, Devmajor: 1, Devminor: 3})
	put(t, tr, &tree.Entry{Path: "dev/sda", Kind: tree.BlockDev, Mode: 0o660, GID: 6, Devmajor: 8, Devminor: 0})
	put(t, tr, &tree.Entry{Path: "dev/nvme0n1p9", Kind: tree.BlockDev, Mode: 0o660, Devmajor: 259, Devminor: 300000})
	put(t, tr, &tree.Entry{Path: "run/initctl", Kind: tree.FIFO, Mode: 0o600})
	put(t, tr, &tree.Entry{Path: "run/sock", Kind: tree.Socket, Mode: 0o755})
	// Owners, including ones that need the high 16 bits.
	put(t, tr, &tree.Entry{Path: "home/pi", Kind: tree.Dir, Mode: 0o750, UID: 1000, GID: 1000})
	put(t, tr, &tree.Entry{Path: "home/pi/.profile", Kind: tree.Regular, Mode: 0o644, UID: 1000, GID: 1000, Size: 3, Content: tree.Bytes("pi\n")})
	put(t, tr, &tree.Entry{Path: "home/sub", Kind: tree.Dir, Mode: 0o700, UID: 100000, GID: 165536})
	// Times: 2000, past 2038, past 2106, before 1970.
	put(t, tr, &tree.Entry{Path: "times/y2040", Kind: tree.Regular, Mode: 0o644, ModTime: t2040})
	put(t, tr, &tree.Entry{Path: "times/y2200", Kind: tree.Regular, Mode: 0o644, ModTime: t2200})
	put(t, tr, &tree.Entry{Path: "times/y1960", Kind: tree.Regular, Mode: 0o644, ModTime: t1960})
	// More attributes than fit in the inode go to a block.
	// compactext4 orders them with a comparator that is not an ordering; with these 16
	// names (13 in the block) the result is not the order the kernel's lookup needs.
	many := map[string][]byte{}
	for _, k := range manyXattrs {
		many[k] = []byte("v:" + k)
	}
	put(t, tr, &tree.Entry{Path: "etc/many-xattrs", Kind: tree.Regular, Mode: 0o644, Size: 2, Content: tree.Bytes("x\n"), Xattrs: many})
	// A directory with 5,000 entries.
	for i := 0; i < 5000; i++ {
		put(t, tr, &tree.Entry{Path: "usr/share/many/entry-" + strings.Repeat("x", i%40) + itoa(i), Kind: tree.Regular, Mode: 0o644,
			Size: int64(i % 3), Content: tree.Bytes("ab"[:i%3])})
	}
	if bigSize > 0 {
		put(t, tr, &tree.Entry{Path: "var/big.img", Kind: tree.Regular, Mode: 0o644, Size: bigSize, Content: patternContent(bigSize)})
	}
	return tr
}

func itoa(i int) string {
	s := ""
	for {
		s = string(rune('0'+i%10)) + s
		i /= 10
		if i == 0 {
			return s
		}
	}
}

// image is a disk image file with guard bytes around the partition window.
type image struct {
	f             *os.File
	off, max, end int64
}

const guard = 0xAA

func newImage(t testing.TB, off, max int64) *image {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	end := off + max + 1*MiB
	if err := f.Truncate(end); err != nil {
		t.Fatal(err)
	}
	g := bytes.Repeat([]byte{guard}, MiB)
	if off > 0 {
		if _, err := f.WriteAt(g[:min(off, MiB)], off-min(off, MiB)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteAt(g, off+max); err != nil {
		t.Fatal(err)
	}
	return &image{f: f, off: off, max: max, end: end}
}

// checkGuards fails when anything outside the window changed.
func (im *image) checkGuards(t testing.TB) {
	t.Helper()
	b := make([]byte, MiB)
	check := func(at int64, n int64) {
		if _, err := im.f.ReadAt(b[:n], at); err != nil {
			t.Fatal(err)
		}
		for i, c := range b[:n] {
			if c != guard {
				t.Fatalf("byte %d (outside the window [%d,%d)) was written: %#x", at+int64(i), im.off, im.off+im.max, c)
			}
		}
	}
	if im.off > 0 {
		n := min(im.off, MiB)
		check(im.off-n, n)
	}
	check(im.off+im.max, MiB)
	if st, err := im.f.Stat(); err != nil || st.Size() != im.end {
		t.Fatalf("image grew or shrank: %v %v", st.Size(), err)
	}
}

// extract copies the file system out of the image, for tools that want a whole file.
func (im *image) extract(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fs.img")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, io.NewSectionReader(im.f, im.off, size)); err != nil {
		t.Fatal(err)
	}
	return p
}

func (im *image) sum(t testing.TB, n int64) string {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(im.f, im.off, n)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func write(t testing.TB, tr *tree.Tree, im *image, o Options) Info {
	t.Helper()
	info, err := Write(context.Background(), tr, im.f, im.off, im.max, o)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// tool runs an e2fsprogs tool in UTC and returns its combined output and exit error.
func tool(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(testutil.NeedTool(t, name), args...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func debugfs(t testing.TB, img, req string) string {
	t.Helper()
	out, err := tool(t, "debugfs", "-R", req, img)
	if err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s", req, err, out)
	}
	return out
}

func fsck(t testing.TB, img string) (string, error) {
	return tool(t, "e2fsck", "-fn", img)
}
