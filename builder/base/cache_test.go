package base

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/builder/tree"
)

func equalListing(t *testing.T, what string, a, b []string) {
	t.Helper()
	if len(a) != len(b) {
		t.Errorf("%s: %d entries vs %d", what, len(a), len(b))
	}
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			t.Errorf("%s: first difference:\n  %s\n  %s", what, a[i], b[i])
			return
		}
	}
}

// breakRoot returns a copy of the image whose root filesystem is zeroed past its superblock:
// Open still accepts it, but reading the filesystem must fail.
func breakRoot(t *testing.T, path string) string {
	img, err := Open(path)
	mustDo(t, err)
	root := img.Root()
	img.Close()
	b, err := os.ReadFile(path)
	mustDo(t, err)
	clear(b[root.Start+4096 : root.Start+root.Size])
	p := filepath.Join(t.TempDir(), "broken.img")
	mustDo(t, os.WriteFile(p, b, 0o644))
	return p
}

func TestRootFSCached(t *testing.T) {
	ctx := context.Background()
	ws := rootSpec()
	path := assemble(t, "dos", []string{makeFAT(t, bootSpec()[:1], 32), makeExt4(t, ws, 64)}, []string{"c", "83"})
	broken := breakRoot(t, path)
	cache := t.TempDir()
	key := "sha256-0123abcd." + ReaderVersion()
	tarPath := filepath.Join(cache, "rootfs", key+".tar")

	img, err := Open(path)
	mustDo(t, err)
	defer img.Close()
	direct, err := img.RootFS(ctx)
	mustDo(t, err)
	want := listing(t, direct)

	cold, err := img.RootFSCached(ctx, cache, key)
	mustDo(t, err)
	checkRoot(t, cold, ws)
	equalListing(t, "cold cache vs direct", want, listing(t, cold))
	fromTar := 0
	_ = cold.Walk(func(e *tree.Entry) error {
		if s, ok := e.Content.(tree.Section); ok && e.Size > 0 && s.Size == e.Size {
			fromTar++
		}
		return nil
	})
	if fromTar == 0 {
		t.Error("no file content of the cold tree comes from the cache tar")
	}
	st, err := os.Stat(tarPath)
	mustDo(t, err)
	goodSize := st.Size()
	if leftovers, _ := filepath.Glob(filepath.Join(cache, "rootfs", "*tmp*")); len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	// Warm: the broken image cannot be read, so the tree must come from the cache alone.
	warmImg, err := Open(broken)
	mustDo(t, err)
	defer warmImg.Close()
	if _, err := warmImg.RootFS(ctx); err == nil {
		t.Fatal("reading the broken root filesystem succeeded; the warm test would prove nothing")
	}
	warm, err := warmImg.RootFSCached(ctx, cache, key)
	mustDo(t, err)
	equalListing(t, "warm cache vs direct", want, listing(t, warm))

	damage := []struct {
		name string
		do   func(t *testing.T)
	}{
		{"truncated tar", func(t *testing.T) { mustDo(t, os.Truncate(tarPath, goodSize/2)) }},
		{"tar cut at a header boundary", func(t *testing.T) { mustDo(t, os.Truncate(tarPath, 1024)) }},
		{"corrupt header", func(t *testing.T) {
			f, err := os.OpenFile(tarPath, os.O_RDWR, 0)
			mustDo(t, err)
			_, err = f.WriteAt([]byte("Z"), 3)
			mustDo(t, err)
			mustDo(t, f.Close())
		}},
		{"missing sidecar", func(t *testing.T) { mustDo(t, os.Remove(strings.TrimSuffix(tarPath, ".tar")+".json")) }},
		{"missing tar", func(t *testing.T) { mustDo(t, os.Remove(tarPath)) }},
		{"foreign sidecar", func(t *testing.T) {
			mustDo(t, os.WriteFile(strings.TrimSuffix(tarPath, ".tar")+".json", []byte(`{"format":"other"}`), 0o644))
		}},
	}
	for _, d := range damage {
		t.Run(d.name, func(t *testing.T) {
			d.do(t)
			// A damaged entry is not trusted: with an unreadable image the build fails ...
			bi, err := Open(broken)
			mustDo(t, err)
			if _, err := bi.RootFSCached(ctx, cache, key); err == nil {
				t.Error("a damaged cache entry was used")
			}
			bi.Close()
			// ... and with the real image the entry is rebuilt.
			gi, err := Open(path)
			mustDo(t, err)
			defer gi.Close()
			rebuilt, err := gi.RootFSCached(ctx, cache, key)
			mustDo(t, err)
			equalListing(t, "rebuilt cache vs direct", want, listing(t, rebuilt))
			st, err := os.Stat(tarPath)
			mustDo(t, err)
			if st.Size() != goodSize {
				t.Errorf("rebuilt tar has %d bytes, want %d", st.Size(), goodSize)
			}
		})
	}

	if _, err := img.RootFSCached(ctx, cache, "../escape"); err == nil {
		t.Error("a key with a path separator was accepted")
	}
}
