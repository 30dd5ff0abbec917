package fetch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLocalSumRemembered: an unchanged local base is not read again; a changed one is, and
// a wrong checksum is still caught.
func TestLocalSumRemembered(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "base.img")
	if err := os.WriteFile(img, []byte(strings.Repeat("raw image ", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &Cache{Dir: filepath.Join(dir, "cache")}
	r1, err := c.Base(context.Background(), img, "")
	if err != nil {
		t.Fatal(err)
	}
	memo := c.localSumPath(mustAbs(t, img))
	if _, err := os.Stat(memo); err != nil {
		t.Fatalf("no memo written: %v", err)
	}
	// Corrupt the memo's sum: an unchanged file must then report the remembered value,
	// which proves the file was not read again.
	b, _ := os.ReadFile(memo)
	fake := strings.Replace(string(b), r1.SourceSHA256, strings.Repeat("f", 64), 1)
	if err := os.WriteFile(memo, []byte(fake), 0o644); err != nil {
		t.Fatal(err)
	}
	r2, err := c.Base(context.Background(), img, "")
	if err != nil {
		t.Fatal(err)
	}
	if r2.SourceSHA256 != strings.Repeat("f", 64) {
		t.Fatalf("unchanged file was hashed again: %s", r2.SourceSHA256)
	}
	// A changed file (new mtime and content) is hashed again.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(img, []byte(strings.Repeat("new image ", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	r3, err := c.Base(context.Background(), img, "")
	if err != nil {
		t.Fatal(err)
	}
	if r3.SourceSHA256 == r1.SourceSHA256 || r3.SourceSHA256 == strings.Repeat("f", 64) {
		t.Fatalf("changed file not hashed again: %s", r3.SourceSHA256)
	}
	if _, err := c.Base(context.Background(), img, r1.SourceSHA256); err == nil || !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Fatalf("stale expected sum accepted: %v", err)
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
