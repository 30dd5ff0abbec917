//go:build linux

package fetch

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A mostly-empty image is written sparsely: its empty space takes no disk blocks.
func TestBaseWritesSparse(t *testing.T) {
	raw := testImage(64<<20, false) // about 400 KiB of data
	dir := t.TempDir()
	src := writeFile(t, filepath.Join(dir, "disk.img.zst"), goZstd(t, raw))
	c := &Cache{Dir: filepath.Join(dir, "cache")}
	res := checkBase(t, c, src, raw, Zstd)
	st, err := os.Stat(res.RawPath)
	if err != nil {
		t.Fatal(err)
	}
	used := st.Sys().(*syscall.Stat_t).Blocks * 512
	if st.Size() != int64(len(raw)) || used > 4<<20 {
		t.Errorf("raw image of %d bytes uses %d bytes of disk", st.Size(), used)
	}
	t.Logf("%d bytes, %d on disk", st.Size(), used)
}
