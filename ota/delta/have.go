package delta

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
)

// Location is where a device holds a chunk: Size bytes of R at Off. Name says which
// partition, for errors ("system-a").
type Location struct {
	Name string
	R    io.ReaderAt
	Off  int64
	Size int64
}

// Have records the chunks a device already holds, by sha256: what Scan found on the active
// slot's partitions. Its chunks are hints, not trusted: Stream hashes a local chunk again
// when it reads it and fetches it from the network if the bytes changed since the scan.
// A Have is not safe for concurrent Scan calls; lookups may run concurrently once the
// scans are done.
type Have struct {
	chunks map[[sha256.Size]byte]Location
	bytes  int64
}

// NewHave returns an empty Have.
func NewHave() *Have { return &Have{chunks: map[[sha256.Size]byte]Location{}} }

// Scan cuts the first size bytes of r into chunks (the same cut as Split) and records each,
// under name. Scanning more than the part that was installed there (the whole partition
// rather than the file system) is harmless: the chunks of the tail are simply never used.
// Of equal chunks the first one scanned is kept.
func (h *Have) Scan(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	if h.chunks == nil {
		h.chunks = map[[sha256.Size]byte]Location{}
	}
	err := Chunks(io.NewSectionReader(r, 0, size), func(off int64, data []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		if _, ok := h.chunks[sum]; !ok {
			h.chunks[sum] = Location{Name: name, R: r, Off: off, Size: int64(len(data))}
			h.bytes += int64(len(data))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scanning %s for chunks: %w", name, err)
	}
	return nil
}

// Lookup returns where the chunk with the given sha256 (lower-case hex) is held.
func (h *Have) Lookup(sum string) (Location, bool) {
	if h == nil {
		return Location{}, false
	}
	var k [sha256.Size]byte
	if n, err := hex.Decode(k[:], []byte(sum)); err != nil || n != len(k) {
		return Location{}, false
	}
	l, ok := h.chunks[k]
	return l, ok
}

// Len returns the number of distinct chunks recorded.
func (h *Have) Len() int { return len(h.chunks) }

// Bytes returns the total size of the distinct chunks recorded.
func (h *Have) Bytes() int64 { return h.bytes }
