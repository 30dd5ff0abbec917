package base

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBootFilesFATLoop: a cluster chain that loops must be an error, not an endless read.
func TestBootFilesFATLoop(t *testing.T) {
	boot := makeFAT(t, bootSpec()[:2], 32)
	b, err := os.ReadFile(boot)
	mustDo(t, err)
	reserved := int(binary.LittleEndian.Uint16(b[14:16]))
	rootCluster := binary.LittleEndian.Uint32(b[44:48])
	for _, fat := range []int{0, 1} { // both copies, so go-diskfs sees matching FATs
		off := reserved*512 + fat*int(binary.LittleEndian.Uint32(b[36:40]))*512 + 4*int(rootCluster)
		binary.LittleEndian.PutUint32(b[off:], rootCluster)
	}
	bad := filepath.Join(t.TempDir(), "loop.vfat")
	mustDo(t, os.WriteFile(bad, b, 0o644))
	path := assemble(t, "dos", []string{bad, makeExt4(t, rootSpec()[:3], 8)}, []string{"c", "83"})
	img, err := Open(path)
	mustDo(t, err)
	defer img.Close()
	_, err = img.BootFiles()
	if err == nil || !strings.Contains(err.Error(), "loops back") || !strings.Contains(err.Error(), "base.img: boot partition 1") {
		t.Fatalf("BootFiles error %v, want a looping cluster chain named", err)
	}
}

// TestRootFSTruncatedExt4: a root partition holding only the first half of its filesystem
// opens (the superblock is there) but reading it fails with a clear error.
func TestRootFSTruncatedExt4(t *testing.T) {
	root := makeExt4(t, rootSpec(), 32)
	b, err := os.ReadFile(root)
	mustDo(t, err)
	half := filepath.Join(t.TempDir(), "half.ext4")
	mustDo(t, os.WriteFile(half, b[:len(b)/2], 0o644))
	path := assemble(t, "dos", []string{makeFAT(t, bootSpec()[:1], 32), half}, []string{"c", "83"})
	img, err := Open(path)
	mustDo(t, err)
	defer img.Close()
	_, err = img.RootFS(context.Background())
	if err == nil || !strings.Contains(err.Error(), "base.img: root partition 2") || !strings.Contains(err.Error(), "larger than its partition") {
		t.Fatalf("RootFS error %v, want the truncated filesystem named", err)
	}
}
