package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestImageHasher writes a sparse file region by region, as writeDisk does, and checks the
// hashes computed along the way against sha256 of the finished file read in full.
func TestImageHasher(t *testing.T) {
	const size = 37<<20 + 4096*3 + 512 // not a multiple of the chunk size
	p := filepath.Join(t.TempDir(), "img")
	f, err := os.Create(p)
	must(t, err)
	defer f.Close()
	must(t, f.Truncate(size))
	ih, err := newImageHasher(p, size)
	must(t, err)
	rng := rand.New(rand.NewPCG(1, 2))
	// Regions: [start, end) written with random data at scattered places, zeros written
	// explicitly in one (data that reads as zero), the rest left as holes.
	regions := []struct{ start, end int64 }{{0, 3 << 20}, {3 << 20, 11<<20 + 512}, {11<<20 + 512, 30 << 20}, {30 << 20, size}}
	var getRange func() string
	for i, r := range regions {
		if i == 2 {
			getRange, err = ih.sum(r.start, r.end-r.start)
			must(t, err)
		}
		for off := r.start; off < r.end; off += int64(rng.IntN(5<<20) + 1) {
			n := min(int64(rng.IntN(300<<10)+1), r.end-off)
			b := make([]byte, n)
			if i != 1 {
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
			}
			_, err := f.WriteAt(b, off)
			must(t, err)
		}
		ih.advance(r.end)
	}
	if _, err := ih.sum(0, 10); err == nil {
		t.Error("a range registered after the hasher passed it was accepted")
	}
	got, err := ih.finish()
	must(t, err)
	if !ih.seekOK {
		t.Log("SEEK_DATA/SEEK_HOLE unsupported here: the holes were read")
	}
	h := sha256.New()
	_, err = io.Copy(h, io.NewSectionReader(f, 0, size))
	must(t, err)
	if want := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Errorf("image sha256 %s, want %s", got, want)
	}
	h.Reset()
	_, err = io.Copy(h, io.NewSectionReader(f, regions[2].start, regions[2].end-regions[2].start))
	must(t, err)
	if got, want := getRange(), hex.EncodeToString(h.Sum(nil)); got != want {
		t.Errorf("range sha256 %s, want %s", got, want)
	}
}

// TestImageHasherAbort checks that an abandoned hasher stops instead of waiting forever.
func TestImageHasherAbort(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	must(t, os.WriteFile(p, make([]byte, 3<<20), 0o644))
	ih, err := newImageHasher(p, 3<<20)
	must(t, err)
	_, err = ih.sum(1<<20, 1<<20)
	must(t, err)
	ih.advance(2<<20 + 5)
	ih.abort()
}
