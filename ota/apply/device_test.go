package apply

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestBlockDevices(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "p6"), make([]byte, 8192), 0o644))
	c := BlockDevices(func(n int) string { return filepath.Join(dir, "p"+strconv.Itoa(n)) })
	p, err := c.Partition(6)
	must(t, err)
	defer p.Close()
	if p.Size() != 8192 {
		t.Fatalf("size %d", p.Size())
	}
	if _, err := p.WriteAt([]byte("x"), 8192); err == nil {
		t.Error("write beyond the end accepted")
	}
	if _, err := p.WriteAt([]byte("x"), 8191); err != nil {
		t.Error(err)
	}
	if _, err := c.Partition(5); err == nil {
		t.Error("missing partition opened")
	}
	// Opened for reading, a partition reads what was written and refuses writes; the file
	// is not even opened for writing (a read-only file opens).
	must(t, os.Chmod(filepath.Join(dir, "p6"), 0o444))
	r, err := c.ReadPartition(6)
	must(t, err)
	defer r.Close()
	b := make([]byte, 1)
	if _, err := r.ReadAt(b, 8191); err != nil || b[0] != 'x' {
		t.Errorf("read %q, %v", b, err)
	}
	if _, err := r.WriteAt([]byte("y"), 0); err == nil {
		t.Error("write to a partition opened for reading accepted")
	}
}
