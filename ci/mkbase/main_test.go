package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/internal/testutil"
)

func TestRun(t *testing.T) {
	for _, tool := range []string{"mke2fs", "debugfs", "mkfs.vfat", "mmd", "mcopy", "sfdisk"} {
		testutil.NeedTool(t, tool)
	}
	out := filepath.Join(t.TempDir(), "small.img")
	var stdout bytes.Buffer
	if err := run(context.Background(), &stdout, []string{"-o", out, "-small", "-seed", "3", "-files", "30", "-mb", "1"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(stdout.String()); got != out {
		t.Errorf("printed %q, want %q", got, out)
	}
	if st, err := os.Stat(out); err != nil || st.Size() == 0 {
		t.Fatalf("no image at %s: %v", out, err)
	}
	if err := run(context.Background(), &stdout, []string{"-o", out, "extra"}); err == nil {
		t.Error("a stray argument was accepted")
	}
	if err := run(context.Background(), &stdout, []string{"-o", out, "-mb", "5"}); err == nil || !strings.Contains(err.Error(), "ExtraFiles") {
		t.Errorf("-mb without -files: %v", err)
	}
}
