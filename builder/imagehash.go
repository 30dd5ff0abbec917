package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// imageHasher computes the sha256 of the disk image while it is being written: the image is
// written front to back, partition by partition, so once a partition is complete every byte
// before its end is final and can be hashed while the next partition is written. Holes of
// the sparse image are hashed from a zero buffer without reading them (SEEK_DATA/SEEK_HOLE).
// Ranges registered with sum (the system partition) get their own sha256, computed by a
// second goroutine from the same reads, so both hashes cost one pass over the image.
type imageHasher struct {
	f    *os.File // its own read-only descriptor: seeking it disturbs no writer
	size int64

	mu     sync.Mutex
	cond   *sync.Cond
	ready  int64 // bytes [0, ready) are final
	ranges []*rangeHash
	stop   bool

	h    hash.Hash
	err  error
	done chan struct{}
	free chan []byte // read buffers
	// seekOK is cleared when the filesystem does not support SEEK_DATA: everything is read.
	seekOK bool
}

const hashChunk = 1 << 20

var zeroChunk = make([]byte, hashChunk)

// rangeHash is the sha256 of [start, end) of the image.
type rangeHash struct {
	start, end int64
	h          hash.Hash
	in         chan hashPiece
	done       chan struct{}
}

// hashPiece is a slice of the image handed to a rangeHash; release is called when it is hashed.
type hashPiece struct {
	b       []byte
	release func()
}

// newImageHasher starts hashing the image at path, size bytes long, as ready advances.
func newImageHasher(path string, size int64) (*imageHasher, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("hashing the image: %w", err)
	}
	ih := &imageHasher{f: f, size: size, h: sha256.New(), done: make(chan struct{}),
		free: make(chan []byte, 4), seekOK: true}
	ih.cond = sync.NewCond(&ih.mu)
	for range cap(ih.free) {
		ih.free <- make([]byte, hashChunk)
	}
	go ih.run()
	return ih, nil
}

// sum registers [start, start+size) for a hash of its own. It must be called before the
// image is final past start; the result is valid after finish.
func (ih *imageHasher) sum(start, size int64) (func() string, error) {
	ih.mu.Lock()
	defer ih.mu.Unlock()
	if ih.ready > start || (len(ih.ranges) > 0 && ih.ranges[len(ih.ranges)-1].end > start) {
		return nil, fmt.Errorf("hashing the image: range at %d registered too late", start)
	}
	r := &rangeHash{start: start, end: start + size, h: sha256.New(), in: make(chan hashPiece, 4), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for p := range r.in {
			r.h.Write(p.b)
			p.release()
		}
	}()
	ih.ranges = append(ih.ranges, r)
	return func() string { return hex.EncodeToString(r.h.Sum(nil)) }, nil
}

// advance declares bytes [0, to) final.
func (ih *imageHasher) advance(to int64) {
	ih.mu.Lock()
	if to > ih.ready {
		ih.ready = min(to, ih.size)
		ih.cond.Broadcast()
	}
	ih.mu.Unlock()
}

// finish declares the whole image final and returns its sha256 once hashed.
func (ih *imageHasher) finish() (string, error) {
	ih.advance(ih.size)
	<-ih.done
	if ih.err != nil {
		return "", ih.err
	}
	return hex.EncodeToString(ih.h.Sum(nil)), nil
}

// abort stops the hashing and releases the file; the hasher is unusable afterwards.
func (ih *imageHasher) abort() {
	ih.mu.Lock()
	ih.stop = true
	ih.cond.Broadcast()
	ih.mu.Unlock()
	<-ih.done
}

func (ih *imageHasher) run() {
	defer close(ih.done)
	defer ih.f.Close()
	defer func() {
		for _, r := range ih.ranges {
			close(r.in)
			<-r.done
		}
	}()
	ih.err = ih.loop()
}

func (ih *imageHasher) loop() error {
	var pos int64
	for pos < ih.size {
		ih.mu.Lock()
		for ih.ready <= pos && !ih.stop {
			ih.cond.Wait()
		}
		limit, stop := ih.ready, ih.stop
		ranges := ih.ranges
		ih.mu.Unlock()
		if stop {
			return errors.New("hashing the image: stopped")
		}
		for pos < limit {
			data, end, err := ih.extent(pos, limit)
			if err != nil {
				return err
			}
			end = min(end, pos+hashChunk)
			n := int(end - pos)
			var b []byte
			release := func() {}
			if data {
				b = <-ih.free
				b = b[:n]
				if _, err := ih.f.ReadAt(b, pos); err != nil {
					return fmt.Errorf("hashing the image at byte %d: %w", pos, err)
				}
			} else {
				b = zeroChunk[:n]
			}
			// Hand the piece to every range it overlaps, then hash it here; the buffer goes
			// back to the pool when the last of them is done with it.
			var refs atomic.Int32
			refs.Store(1)
			if data {
				buf := b[:cap(b)]
				release = func() {
					if refs.Add(-1) == 0 {
						ih.free <- buf
					}
				}
			}
			for _, r := range ranges {
				lo, hi := max(pos, r.start), min(end, r.end)
				if lo < hi {
					refs.Add(1)
					r.in <- hashPiece{b: b[lo-pos : hi-pos], release: release}
				}
			}
			ih.h.Write(b)
			release()
			pos = end
		}
	}
	return nil
}

// extent reports whether [pos, end) is data (or possibly data) or a hole, with end <= limit.
func (ih *imageHasher) extent(pos, limit int64) (data bool, end int64, err error) {
	if !ih.seekOK {
		return true, limit, nil
	}
	d, err := ih.f.Seek(pos, seekData)
	if errors.Is(err, syscall.ENXIO) { // no data at or after pos: a hole to the end of the file
		return false, limit, nil
	}
	if err != nil {
		ih.seekOK = false // SEEK_DATA unsupported here: read everything
		return true, limit, nil
	}
	if d > pos {
		return false, min(d, limit), nil
	}
	h, err := ih.f.Seek(pos, seekHole)
	if err != nil || h <= pos {
		ih.seekOK = false
		return true, limit, nil
	}
	return true, min(h, limit), nil
}

// lseek whence values for sparse files (Linux, the BSDs and macOS). Where the system does
// not know them, Seek fails and the hasher reads everything.
const (
	seekData = 3
	seekHole = 4
)
