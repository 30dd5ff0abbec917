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
}
