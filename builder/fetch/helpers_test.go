package fetch

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testImage returns a deterministic image of size bytes that is zero except for a few
// regions of data, like a freshly made disk image. With tailData its last bytes are data,
// otherwise it ends in zeros.
func testImage(size int, tailData bool) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	put := func(off, n int) {
		for i := off; i < off+n && i < len(b); i++ {
			b[i] = byte(r.Uint32())
		}
	}
	put(0, 512)
	put(1<<20, 300<<10+17)
	put(size/2+12345, 100000)
	if tailData {
		put(size-777, 777)
	}
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func writeFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cacheFiles lists the files under dir/sub (relative to dir), locks excluded.
func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		// locks/ and localsums/ (the remembered sha256 of local inputs) hold no data.
		if d.IsDir() || strings.HasPrefix(rel, "locks"+string(filepath.Separator)) || strings.HasPrefix(rel, "localsums"+string(filepath.Separator)) {
			return nil
		}
		out = append(out, rel)
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

// fileServer serves one file, counting requests and body bytes sent. It honours Range and
// If-Range (via http.ServeContent) unless ignoreRange is set, and can cut the connection of
// its first response after cutAt body bytes.
type fileServer struct {
	mu          sync.Mutex
	data        []byte
	etag        string
	cutAt       int
	hang        bool // instead of cutting the first response, stop sending and wait
	ignoreRange bool
	status      []int // statuses to answer the first requests with, before serving
	headers     []http.Header
	sent        int64
}

func (s *fileServer) setData(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = b
	s.etag = `"` + sum(b)[:16] + `"`
}

func (s *fileServer) requests() []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]http.Header(nil), s.headers...)
}

func (s *fileServer) bytesSent() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

func (s *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.headers)
	s.headers = append(s.headers, r.Header.Clone())
	data, etag := s.data, s.etag
	s.mu.Unlock()
	if n < len(s.status) {
		http.Error(w, http.StatusText(s.status[n]), s.status[n])
		return
	}
	cw := &countingWriter{ResponseWriter: w, s: s}
	modTime := time.Unix(1700000000, 0)
	w.Header().Set("ETag", etag)
	w.Header().Set("Last-Modified", modTime.UTC().Format(http.TimeFormat))
	if n == 0 && s.cutAt > 0 {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		_, _ = cw.Write(data[:s.cutAt])
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		if s.hang {
			<-r.Context().Done()
			return
		}
		conn, _, err := rc.Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	}
	if s.ignoreRange {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		_, _ = cw.Write(data)
		return
	}
	http.ServeContent(cw, r, "", modTime, bytes.NewReader(data))
}

type countingWriter struct {
	http.ResponseWriter
	s *fileServer
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.s.mu.Lock()
	w.s.sent += int64(n)
	w.s.mu.Unlock()
	return n, err
}
