package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/edgeimg/edgeimg/ota/bundle"
)

// ChunkSource fetches chunks by sha256 (lower-case hex): the fleet's /v1/chunks/{sha256}
// (Remote) or, in tests, a map. What it returns is checked by the caller.
type ChunkSource interface {
	Chunk(ctx context.Context, sha256 string) ([]byte, error)
}

// Ahead is how many chunks Stream fetches (or reads from the card) ahead of the one being
// written: enough to hide the network's latency, with at most (Ahead+2)*MaxChunk bytes in
// memory.
const Ahead = 4

// Counts are the bytes of a delta download by origin.
type Counts struct {
	Local      int64 // chunks read from the active slot (Have)
	InPlace    int64 // chunks already at their place in the destination partition
	Downloaded int64 // chunks fetched from the ChunkSource
	Total      int64 // the parts' sizes
	// DownloadedChunks is the number of chunks fetched; LocalChunks and InPlaceChunks those
	// taken from the card.
	LocalChunks, InPlaceChunks, DownloadedChunks int
}

// Reused returns the bytes not downloaded: Local plus InPlace.
func (c Counts) Reused() int64 { return c.Local + c.InPlace }

// Stats counts what a Stream took from where. It is safe to read while the stream runs
// (progress) and after it ended.
type Stats struct {
	mu sync.Mutex
	c  Counts
}

// Counts returns the counts so far.
func (s *Stats) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c
}

func (s *Stats) add(f func(c *Counts)) {
	s.mu.Lock()
	f(&s.c)
	s.mu.Unlock()
}

// Stream returns a bundle stream, byte for byte what bundle.Write wrote for the release, made
// from chunks: manifest and sig are the release's exact manifest.json and manifest.sig, m is
// the manifest parsed from them, idx holds each part's Index (by part name). For each chunk
// of each part, in order, Stream takes the first of:
//
//  1. the bytes at the chunk's own offset in inPlace[part] (the destination partition: an
//     interrupted install of this release left them there), if inPlace has the part;
//  2. the chunk where have found it on the card;
//  3. src.Chunk, tried twice.
//
// Every chunk is hashed and must match its sha256 and size; a local chunk that does not falls
// through to the next source, a fetched one is refused and fetched again once, after which the
// stream fails with an error naming the part, chunk and sha256. Up to Ahead chunks are read or
// fetched concurrently ahead of the writer. The stream does not check the signature nor the
// parts' whole sha256: ota/apply.Apply does, as for any bundle.
//
// The error is for arguments that cannot make the release (a missing or mismatched index, a
// manifest that is not m); failures while streaming come from the reader's Read. Close the
// reader to stop the stream early. The Stats are complete once Read returned io.EOF or an
// error.
func Stream(ctx context.Context, manifest, sig []byte, m *bundle.Manifest, idx map[string]*Index,
	have *Have, inPlace map[string]io.ReaderAt, src ChunkSource) (io.ReadCloser, *Stats, error) {
	if m == nil {
		return nil, nil, errors.New("delta stream: no manifest")
	}
	if mb, err := m.Marshal(); err != nil || !bytes.Equal(mb, manifest) {
		return nil, nil, fmt.Errorf("delta stream: manifest.json is not the manifest of release %s", m.Version)
	}
	st := &Stats{}
	ctx, cancel := context.WithCancel(ctx)
	var sources []bundle.Source
	for _, p := range m.Parts {
		ix := idx[p.Name]
		if ix == nil {
			cancel()
			return nil, nil, fmt.Errorf("delta stream: no index for part %s of release %s", p.Name, m.Version)
		}
		if err := ix.Validate(); err != nil {
			cancel()
			return nil, nil, fmt.Errorf("delta stream: %w", err)
		}
		if ix.Part != p.Name || ix.Size != p.Size || ix.SHA256 != p.SHA256 {
			cancel()
			return nil, nil, fmt.Errorf("delta stream: the index of part %s describes part %s (%d bytes, sha256 %s), the manifest's has %d bytes, sha256 %s",
				p.Name, ix.Part, ix.Size, ix.SHA256, p.Size, p.SHA256)
		}
		st.c.Total += p.Size
		a := &assembler{ix: ix, have: have, dst: inPlace[p.Name], src: src, st: st}
		sources = append(sources, bundle.Source{Name: p.Name, Size: p.Size, Open: func() (io.ReadCloser, error) {
			return a.open(ctx), nil
		}})
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(bundle.WriteStream(pw, manifest, sig, sources))
	}()
	return &streamReader{pr: pr, cancel: cancel, done: done}, st, nil
}

type streamReader struct {
	pr     *io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *streamReader) Read(b []byte) (int, error) { return s.pr.Read(b) }

// Close stops the stream and waits for its writer to end.
func (s *streamReader) Close() error {
	s.cancel()
	s.pr.CloseWithError(errors.New("delta stream closed"))
	<-s.done
	return nil
}

// assembler makes one part from its chunks.
type assembler struct {
	ix   *Index
	have *Have
	dst  io.ReaderAt
	src  ChunkSource
	st   *Stats
}

type chunkResult struct {
	data []byte
	err  error
}

// open starts fetching the part's chunks, at most Ahead ahead of the reader.
func (a *assembler) open(ctx context.Context) io.ReadCloser {
	ctx, cancel := context.WithCancel(ctx)
	queue := make(chan chan chunkResult, Ahead-1)
	go func() {
		defer close(queue)
		var off int64
		for i, c := range a.ix.Chunks {
			ch := make(chan chunkResult, 1)
			select {
			case queue <- ch:
			case <-ctx.Done():
				return
			}
			go func(i int, off int64, c Chunk) {
				data, err := a.chunk(ctx, i, off, c)
				ch <- chunkResult{data, err}
			}(i, off, c)
			off += c.Size
		}
	}()
	return &partReader{ctx: ctx, cancel: cancel, queue: queue}
}

// chunk returns chunk i at offset off from the first source that has it right.
func (a *assembler) chunk(ctx context.Context, i int, off int64, c Chunk) ([]byte, error) {
	buf := make([]byte, c.Size)
	if a.dst != nil && readMatches(a.dst, off, buf, c.SHA256) {
		a.st.add(func(s *Counts) { s.InPlace += c.Size; s.InPlaceChunks++ })
		return buf, nil
	}
	if l, ok := a.have.Lookup(c.SHA256); ok && l.Size == c.Size && readMatches(l.R, l.Off, buf, c.SHA256) {
		a.st.add(func(s *Counts) { s.Local += c.Size; s.LocalChunks++ })
		return buf, nil
	}
	if a.src == nil {
		return nil, fmt.Errorf("part %s chunk %d (sha256 %s): not on the card and no source to fetch it from", a.ix.Part, i, c.SHA256)
	}
	var last error
	for range 2 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := a.src.Chunk(ctx, c.SHA256)
		switch {
		case err != nil:
			last = err
		case int64(len(data)) != c.Size:
			last = fmt.Errorf("fetched %d bytes, the index says %d", len(data), c.Size)
		default:
			s := sha256.Sum256(data)
			if got := hex.EncodeToString(s[:]); got != c.SHA256 {
				last = fmt.Errorf("fetched bytes hash to sha256 %s", got)
				break
			}
			a.st.add(func(s *Counts) { s.Downloaded += c.Size; s.DownloadedChunks++ })
			return data, nil
		}
	}
	return nil, fmt.Errorf("part %s chunk %d at offset %d (sha256 %s): %w", a.ix.Part, i, off, c.SHA256, last)
}

// readMatches reads len(buf) bytes of r at off into buf and tells whether they hash to sum.
func readMatches(r io.ReaderAt, off int64, buf []byte, sum string) bool {
	n, err := r.ReadAt(buf, off)
	if n != len(buf) || (err != nil && err != io.EOF) {
		return false
	}
	s := sha256.Sum256(buf)
	return hex.EncodeToString(s[:]) == sum
}

type partReader struct {
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan chan chunkResult
	cur    []byte
	err    error
}

func (p *partReader) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.err != nil {
			return 0, p.err
		}
		var ch chan chunkResult
		var ok bool
		select {
		case ch, ok = <-p.queue:
		case <-p.ctx.Done():
			p.err = p.ctx.Err()
			continue
		}
		if !ok {
			if err := p.ctx.Err(); err != nil {
				p.err = err
			} else {
				p.err = io.EOF
			}
			continue
		}
		select {
		case r := <-ch:
			p.cur, p.err = r.data, r.err
		case <-p.ctx.Done():
			p.err = p.ctx.Err()
		}
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// Close stops the fetches of the part.
func (p *partReader) Close() error {
	p.cancel()
	return nil
}
