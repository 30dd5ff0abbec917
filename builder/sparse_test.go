package builder

import (
	"os"
	"syscall"
	"testing"
)

type syscallStat = syscall.Stat_t

// diskUsage returns the bytes a file occupies on disk and its size.
func diskUsage(t *testing.T, p string, st *syscall.Stat_t) (used, size int64) {
	t.Helper()
	if err := syscall.Stat(p, st); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512, fi.Size()
}
