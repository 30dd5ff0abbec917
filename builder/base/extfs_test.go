package base

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

// fragmented is a file of alternating data and zero blocks: mke2fs -d leaves the zero blocks
// as holes, so the file has one extent per data block and an extent tree deeper than the
// four extents an inode holds.
func fragmented(blockSize, blocks int) []byte {
	b := make([]byte, blockSize*blocks+17)
	for i := 0; i < blocks; i += 2 {
		copy(b[i*blockSize:], pseudoRandom(blockSize, byte(i)))
	}
	copy(b[blocks*blockSize:], "the tail of it...")
	return b
}

// TestRootFSFilesystemVariants reads root filesystems made by mke2fs with the layouts the
// reader must handle besides the default one: 1 KiB blocks (the group descriptors start at
// block 2), inline data, meta_bg, no metadata_csum and 32-byte group descriptors, and
// ext2/3-style block maps. Each must give exactly the reference tree, contents included.
func TestRootFSFilesystemVariants(t *testing.T) {
	for _, tc := range []struct {
		name      string
		blockSize int
		sizeMiB   int
		args      []string
		blockMaps bool
	}{
		{"1k-blocks", 1024, 64, []string{"-b", "1024"}, false},
		{"inline-data", 4096, 64, []string{"-b", "4096", "-O", "inline_data"}, false},
		// 32 groups of 8 MiB need two descriptor blocks: the second lives in group 16.
		{"meta-bg", 1024, 256, []string{"-b", "1024", "-O", "meta_bg,^resize_inode"}, false},
		{"no-csum-32bit", 4096, 64, []string{"-b", "4096", "-O", "^metadata_csum,^64bit"}, false},
		{"block-maps-1k", 1024, 64, []string{"-b", "1024", "-O", "^extents,^64bit"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ws := append(rootSpec(), want{path: "var", kind: tree.Dir, mode: 0o755, mtime: rootSpec()[1].mtime},
				want{path: "var/fragmented.db", kind: tree.Regular, mode: 0o600, mtime: rootSpec()[1].mtime,
					data: fragmented(tc.blockSize, 700)})
			fs := makeExt4With(t, ws, tc.sizeMiB, tc.args...)
			if tc.blockMaps {
				setExtentsFeature(t, fs)
			}
			path := assemble(t, "dos", []string{makeFAT(t, bootSpec()[:1], 32), fs}, []string{"c", "83"})
			img, err := Open(path)
			mustDo(t, err)
			defer img.Close()
			if img.Root().FS != FSExt4 {
				t.Fatalf("root partition probed as %q", img.Root().FS)
			}
			rt, err := img.RootFS(context.Background())
			mustDo(t, err)
			checkRoot(t, rt, ws)
		})
	}
}

// setExtentsFeature sets the extents feature flag of an ext filesystem whose files use block
// maps, as on an ext3 filesystem converted with tune2fs -O extents, and fixes the superblock
// checksum.
func setExtentsFeature(t *testing.T, img string) {
	b, err := os.ReadFile(img)
	mustDo(t, err)
	sb := b[1024:2048]
	le := binary.LittleEndian
	le.PutUint32(sb[0x60:], le.Uint32(sb[0x60:])|incompatExtents)
	if le.Uint32(sb[0x64:])&roCompatMetadataCsum != 0 {
		le.PutUint32(sb[0x3fc:], crc32c(^uint32(0), sb[:0x3fc]))
	}
	mustDo(t, os.WriteFile(img, b, 0o644))
}

// TestRootFSInodeChecksum: an inode whose bytes changed after its checksum was written is
// reported, naming the file.
func TestRootFSInodeChecksum(t *testing.T) {
	debugfs := testutil.NeedTool(t, "debugfs")
	fs := makeExt4(t, rootSpec(), 16)
	out := testutil.Run(t, debugfs, "-R", "imap /etc/passwd", fs)
	m := regexp.MustCompile(`located at block (\d+), offset 0x([0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("debugfs imap: %s", out)
	}
	blk, _ := strconv.ParseInt(m[1], 10, 64)
	off, _ := strconv.ParseInt(m[2], 16, 64)
	b, err := os.ReadFile(fs)
	mustDo(t, err)
	b[blk*4096+off+0x10] ^= 1 // one bit of the mtime
	bad := filepath.Join(t.TempDir(), "bad.ext4")
	mustDo(t, os.WriteFile(bad, b, 0o644))
	path := assemble(t, "dos", []string{makeFAT(t, bootSpec()[:1], 32), bad}, []string{"c", "83"})
	img, err := Open(path)
	mustDo(t, err)
	defer img.Close()
	_, err = img.RootFS(context.Background())
	if err == nil || !strings.Contains(err.Error(), "/etc/passwd") || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("RootFS error %v, want a checksum mismatch naming /etc/passwd", err)
	}
}

func TestPathLess(t *testing.T) {
	ps := []string{"a", "a/b", "a/b/c", "a-b", "a.b", "a0", "ab", "b", "b/a"}
	for i := range ps {
		for j := range ps {
			want := strings.ReplaceAll(ps[i], "/", "\x00") < strings.ReplaceAll(ps[j], "/", "\x00")
			if got := tree.PathLess(ps[i], ps[j]); got != want {
				t.Errorf("tree.PathLess(%q, %q) = %v, want %v", ps[i], ps[j], got, want)
			}
		}
	}
}
