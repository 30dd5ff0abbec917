package base

import (
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// mbrWith returns a size-byte image whose MBR lists the given (type, start sector, sectors).
func mbrWith(size int, parts ...[3]uint32) []byte {
	b := make([]byte, size)
	for i, p := range parts {
		e := b[446+16*i:]
		e[4] = byte(p[0])
		binary.LittleEndian.PutUint32(e[8:], p[1])
		binary.LittleEndian.PutUint32(e[12:], p[2])
	}
	b[510], b[511] = 0x55, 0xaa
	return b
}

// FuzzOpen feeds arbitrary bytes to Open and, when they pass, to BootFiles and RootFS and
// every file's content: nothing may panic or hang. Inputs are capped at 8 MiB.
func FuzzOpen(f *testing.F) {
	f.Add([]byte{})
	f.Add(mbrWith(4096, [3]uint32{0x0c, 1, 2}, [3]uint32{0x83, 3, 4}))
	f.Add(mbrWith(64<<10, [3]uint32{0x0c, 8, 40}, [3]uint32{0x83, 48, 64}))
	f.Add(mbrWith(64<<10, [3]uint32{0xee, 1, 127}))
	if _, err := os.Stat("/usr/sbin/mke2fs"); err == nil && testing.Short() == false {
		// A complete small base image, so mutations reach the filesystem readers.
		boot := makeFATSize(f, bootSpec()[:2], 12, 1)
		root := makeExt4(f, rootSpec()[:12], 2)
		b, err := os.ReadFile(assemble(f, "dos", []string{boot, root}, []string{"c", "83"}))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 8<<20 {
			return
		}
		p := filepath.Join(dir, "fuzz.img")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := Open(p)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		defer img.Close()
		drain := func(tr *tree.Tree) {
			_ = tr.Walk(func(e *tree.Entry) error {
				if e.Kind == tree.Regular && e.Content != nil {
					if rc, err := e.Content.Open(); err == nil {
						_, _ = io.Copy(io.Discard, io.LimitReader(rc, int64(len(data))+1))
						rc.Close()
					}
				}
				return nil
			})
		}
		if bt, err := img.BootFiles(); err == nil {
			drain(bt)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if rt, err := img.RootFS(ctx); err == nil {
			drain(rt)
		}
	})
}
