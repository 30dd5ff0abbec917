package base

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// benchSpec is a root filesystem of n files (EDGEIMG_BENCH_FILES, default 2000) in 50-file
// directories, sizes from a few bytes to 256 KiB.
func benchSpec(b *testing.B) ([]want, int) {
	n := 2000
	if s := os.Getenv("EDGEIMG_BENCH_FILES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("EDGEIMG_BENCH_FILES=%q", s)
		}
		n = v
	}
	t0 := time.Unix(1700000000, 0).UTC()
	var ws []want
	total := 0
	for i := 0; i < n; i++ {
		d := fmt.Sprintf("usr/lib/d%03d", i/50)
		if i%50 == 0 {
			ws = append(ws, want{path: d, kind: tree.Dir, mode: 0o755, mtime: t0})
		}
		size := (i * 7919) % (256 << 10)
		if i%3 == 0 {
			size %= 4096
		}
		total += size
		ws = append(ws, want{path: fmt.Sprintf("%s/f%05d", d, i), kind: tree.Regular, mode: 0o644, mtime: t0,
			data: pseudoRandom(size, byte(i))})
	}
	return append([]want{{path: "usr", kind: tree.Dir, mode: 0o755, mtime: t0},
		{path: "usr/lib", kind: tree.Dir, mode: 0o755, mtime: t0},
		{path: "lost+found", kind: tree.Dir, mode: 0o700, mtime: t0}}, ws...), total
}

// BenchmarkRootFS compares reading the root filesystem from the image (cold, which also
// writes the cache) with indexing the cache (warm).
func BenchmarkRootFS(b *testing.B) {
	ws, total := benchSpec(b)
	sizeMiB := total>>20*2 + 64
	path := assemble(b, "dos", []string{makeFAT(b, bootSpec()[:1], 32), makeExt4(b, ws, sizeMiB)}, []string{"c", "83"})
	ctx := context.Background()
	img, err := Open(path)
	mustDo(b, err)
	defer img.Close()

	b.Run("metadata-only", func(b *testing.B) {
		for b.Loop() {
			if _, err := img.RootFS(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		b.SetBytes(int64(total))
		for b.Loop() {
			cache := b.TempDir()
			if _, err := img.RootFSCached(ctx, cache, "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
	cache := b.TempDir()
	if _, err := img.RootFSCached(ctx, cache, "k"); err != nil {
		b.Fatal(err)
	}
	b.Run("warm", func(b *testing.B) {
		for b.Loop() {
			if _, err := img.RootFSCached(ctx, cache, "k"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
