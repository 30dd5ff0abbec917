package basegen

import (
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"sync"

	"github.com/edgeimg/edgeimg/builder/tree"
)

const (
	chunkSize = 256
	dictSize  = 64 << 10
)

// generator makes the deterministic pseudo-random content of placeholder files. Half of the
// 256-byte chunks are fresh random bytes, half are copies from a 64 KiB dictionary shared by
// all files, so the content compresses roughly 2:1, like a real root filesystem.
type generator struct {
	seed     int64
	dictOnce sync.Once
	dict     []byte
}

func newGenerator(seed int64) *generator { return &generator{seed: seed} }

func (g *generator) key(name string) [32]byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(g.seed))
	return sha256.Sum256(append(append([]byte("edgeimg basegen content "), b[:]...), name...))
}

func (g *generator) dictionary() []byte {
	g.dictOnce.Do(func() {
		g.dict = make([]byte, dictSize)
		r := rand.NewChaCha8(g.key("\x00dictionary"))
		_, _ = r.Read(g.dict)
	})
	return g.dict
}

// content returns size bytes that depend only on the seed and name.
func (g *generator) content(name string, size int64) tree.Content {
	return tree.Func(func() (io.ReadCloser, error) {
		return io.NopCloser(&genReader{
			rng:  rand.NewChaCha8(g.key(name)),
			left: size,
			off:  chunkSize,
			dict: g.dictionary(),
		}), nil
	})
}

type genReader struct {
	rng   *rand.ChaCha8
	left  int64
	chunk [chunkSize]byte
	off   int
	dict  []byte
}

func (r *genReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.left > 0 {
		if r.off == chunkSize {
			r.fill()
		}
		c := copy(p[n:], r.chunk[r.off:])
		if int64(c) > r.left {
			c = int(r.left)
		}
		r.off += c
		n += c
		r.left -= int64(c)
	}
	return n, nil
}

func (r *genReader) fill() {
	x := r.rng.Uint64()
	if x&1 == 0 {
		_, _ = r.rng.Read(r.chunk[:])
	} else {
		o := (x >> 1) % uint64(len(r.dict)-chunkSize)
		copy(r.chunk[:], r.dict[o:o+chunkSize])
	}
	r.off = 0
}
