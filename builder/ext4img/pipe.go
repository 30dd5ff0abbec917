package ext4img

import (
	"io"
	"sync"
)

// bufPipe is an io.Pipe with a buffer: the writer fills chunks while the reader drains
// earlier ones, so reading the tree's files and writing the image overlap.
type bufPipe struct {
	full, free chan []byte
	cur        []byte // the chunk being written (writer side)
	rd         []byte // the rest of the chunk being read (reader side)
	rdChunk    []byte
	mu         sync.Mutex
	werr, rerr error // set once: writer closed (io.EOF or its error) / reader closed
	done       chan struct{}
	closeOnce  sync.Once
}

func newBufPipe(chunk, n int) *bufPipe {
	p := &bufPipe{full: make(chan []byte, n), free: make(chan []byte, n), done: make(chan struct{})}
	for i := 0; i < n; i++ {
		p.free <- make([]byte, 0, chunk)
	}
	return p
}

// Write copies b into chunks, blocking while all chunks wait to be read.
func (p *bufPipe) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		if p.cur == nil {
			select {
			case p.cur = <-p.free:
			case <-p.done:
				return n, p.readErr()
			}
		}
		m := copy(p.cur[len(p.cur):cap(p.cur)], b)
		p.cur = p.cur[:len(p.cur)+m]
		b, n = b[m:], n+m
		if len(p.cur) == cap(p.cur) {
			if err := p.send(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (p *bufPipe) send() error {
	select {
	case p.full <- p.cur:
		p.cur = nil
		return nil
	case <-p.done:
		return p.readErr()
	}
}

func (p *bufPipe) readErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rerr != nil {
		return p.rerr
	}
	return io.ErrClosedPipe
}

// CloseWithError flushes what was written and ends the stream: the reader gets err, or io.EOF
// when err is nil, after the data.
func (p *bufPipe) CloseWithError(err error) {
	if err == nil {
		err = io.EOF
	}
	if len(p.cur) > 0 {
		_ = p.send()
	}
	p.mu.Lock()
	p.werr = err
	p.mu.Unlock()
	close(p.full)
}

// Read returns buffered data, then the writer's error.
func (p *bufPipe) Read(b []byte) (int, error) {
	for len(p.rd) == 0 {
		if p.rdChunk != nil {
			p.free <- p.rdChunk[:0]
			p.rdChunk = nil
		}
		c, ok := <-p.full
		if !ok {
			p.mu.Lock()
			defer p.mu.Unlock()
			return 0, p.werr
		}
		p.rdChunk, p.rd = c, c
	}
	n := copy(b, p.rd)
	p.rd = p.rd[n:]
	return n, nil
}

// CloseRead stops the writer: its pending and later writes fail with err.
func (p *bufPipe) CloseRead(err error) {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.rerr = err
		p.mu.Unlock()
		close(p.done)
	})
}
