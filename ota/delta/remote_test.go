package delta

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// fleetServer serves one release's routes like the fleet server: manifest, signature,
// indexes, chunks, and the bundle with ranges (http.ServeContent). cutAt, when set, makes
// the bundle answers stop at those absolute offsets (one per answer) by closing the
// connection.
type fleetServer struct {
	mu       sync.Mutex
	r        *release
	blob     []byte
	etag     string
	cuts     []int64 // absolute offsets at which successive bundle answers are cut
	ranges   []string
	noRanges bool // answer every bundle request with 200 and the whole bundle
	status   int  // answer bundle requests with this status (then clear it)
	chunks   map[string][]byte
}

func newFleetServer(t *testing.T, r *release) (*fleetServer, *Remote) {
	fs := &fleetServer{r: r, blob: r.full, etag: `"v1"`, chunks: newSource(t, r.boot, r.system).chunks}
	srv := httptest.NewServer(fs)
	t.Cleanup(srv.Close)
	return fs, &Remote{Client: srv.Client(), BaseURL: srv.URL + "/", Backoff: time.Millisecond, Retries: 3}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(api.Error{Error: msg, Code: code})
}

func (fs *fleetServer) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	p := req.URL.Path
	switch {
	case p == "/v1/releases/2/manifest":
		w.Write(fs.r.manifest)
	case p == "/v1/releases/2/signature":
		w.Write(fs.r.sig)
	case strings.HasPrefix(p, "/v1/releases/2/index/"):
		ix := fs.r.idx[strings.TrimPrefix(p, "/v1/releases/2/index/")]
		if ix == nil {
			writeError(w, http.StatusNotFound, "not_found", "no index")
			return
		}
		b, _ := ix.Marshal()
		w.Write(b)
	case strings.HasPrefix(p, api.PathChunks):
		b, ok := fs.chunks[strings.TrimPrefix(p, api.PathChunks)]
		if !ok {
			writeError(w, http.StatusNotFound, "not_found", "no such chunk")
			return
		}
		w.Write(b)
	case p == "/v1/releases/2/bundle":
		fs.ranges = append(fs.ranges, req.Header.Get("Range")+"|"+req.Header.Get("If-Range"))
		if fs.status != 0 {
			s := fs.status
			fs.status = 0
			writeError(w, s, "internal", "try again")
			return
		}
		if fs.noRanges {
			req.Header.Del("Range")
		}
		w.Header().Set("ETag", fs.etag)
		if len(fs.cuts) == 0 {
			http.ServeContent(w, req, "bundle", time.Time{}, bytes.NewReader(fs.blob))
			return
		}
		cut := fs.cuts[0]
		fs.cuts = fs.cuts[1:]
		cw := &cutWriter{ResponseWriter: w, left: cut}
		if r := req.Header.Get("Range"); r != "" && req.Header.Get("If-Range") == fs.etag {
			start, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(r, "bytes="), "-"), 10, 64)
			cw.left = cut - start
		}
		func() {
			defer func() {
				if recover() != nil {
					cw.hijackAndClose()
				}
			}()
			http.ServeContent(cw, req, "bundle", time.Time{}, bytes.NewReader(fs.blob))
		}()
	default:
		writeError(w, http.StatusNotFound, "not_found", "no route")
	}
}

// cutWriter writes left bytes of the body, then panics so that the connection is closed.
type cutWriter struct {
	http.ResponseWriter
	left int64
}

type cutPanic struct{}

func (c *cutWriter) Write(b []byte) (int, error) {
	if int64(len(b)) >= c.left {
		c.ResponseWriter.Write(b[:c.left])
		c.left = 0
		panic(cutPanic{})
	}
	c.left -= int64(len(b))
	return c.ResponseWriter.Write(b)
}

// hijackAndClose flushes what was written and drops the connection mid-body.
func (c *cutWriter) hijackAndClose() {
	c.ResponseWriter.(http.Flusher).Flush()
	conn, _, err := http.NewResponseController(c.ResponseWriter).Hijack()
	if err == nil {
		conn.Close()
	}
}

func TestRemoteSmall(t *testing.T) {
	_, r2 := twoReleases(t)
	fs, rem := newFleetServer(t, r2)
	ctx := context.Background()
	m, sig, err := rem.Manifest(ctx, "2")
	must(t, err)
	if !bytes.Equal(m, r2.manifest) || !bytes.Equal(sig, r2.sig) {
		t.Fatal("manifest or signature differ")
	}
	b, err := rem.Index(ctx, "2", bundle.PartSystem)
	must(t, err)
	ix, err := ParseIndex(b, bundle.PartSystem, r2.m.Parts[1].Size, r2.m.Parts[1].SHA256)
	must(t, err)
	c, err := rem.Chunk(ctx, ix.Chunks[2].SHA256)
	must(t, err)
	if sum(c) != ix.Chunks[2].SHA256 {
		t.Fatal("chunk bytes differ")
	}

	// 404 is ErrNotFound, with the server's message.
	_, err = rem.Index(ctx, "2", "data")
	var he *HTTPError
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &he) || he.Code != "not_found" || !strings.Contains(err.Error(), "no index") {
		t.Fatalf("missing index: %v", err)
	}
	if _, _, err := rem.Manifest(ctx, "3"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing release: %v", err)
	}
	// Oversize answers.
	fs.chunks[strings.Repeat("e", 64)] = make([]byte, MaxChunk+1)
	if _, err := rem.Chunk(ctx, strings.Repeat("e", 64)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("oversize chunk: %v", err)
	}
	fs.r = &release{manifest: make([]byte, bundle.MaxManifestSize+1)}
	if _, _, err := rem.Manifest(ctx, "2"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("oversize manifest: %v", err)
	}
	// A server chunked answer without Content-Length is bounded too.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 5 {
			w.Write(make([]byte, MaxChunk/4))
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	if _, err := (&Remote{BaseURL: srv.URL}).Chunk(ctx, "x"); err == nil || !strings.Contains(err.Error(), "answer of more than") {
		t.Fatalf("streamed oversize chunk: %v", err)
	}
	// A 5xx carries the status.
	srv500 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusServiceUnavailable, "internal", "store down")
	}))
	defer srv500.Close()
	if _, err := (&Remote{BaseURL: srv500.URL}).Chunk(ctx, "x"); !errors.As(err, &he) || he.Status != 503 || errors.Is(err, ErrNotFound) {
		t.Fatalf("503: %v", err)
	}
}

func readBundle(rem *Remote) ([]byte, error) {
	rc := rem.Bundle(context.Background(), "2")
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestRemoteBundleResume(t *testing.T) {
	_, r2 := twoReleases(t)
	n := int64(len(r2.full))

	t.Run("whole", func(t *testing.T) {
		_, rem := newFleetServer(t, r2)
		b, err := readBundle(rem)
		must(t, err)
		if !bytes.Equal(b, r2.full) {
			t.Fatal("bundle differs")
		}
	})
	t.Run("cut twice and a 503", func(t *testing.T) {
		fs, rem := newFleetServer(t, r2)
		fs.cuts = []int64{n / 3, 2 * n / 3}
		rc := rem.Bundle(context.Background(), "2")
		defer rc.Close()
		var out bytes.Buffer
		_, err := io.CopyN(&out, rc, n/2)
		must(t, err)
		fs.mu.Lock()
		fs.status = http.StatusServiceUnavailable
		fs.mu.Unlock()
		_, err = io.Copy(&out, rc)
		must(t, err)
		if !bytes.Equal(out.Bytes(), r2.full) {
			t.Fatal("resumed bundle differs")
		}
		// The 503 answers the request after the second cut, which is then made again.
		third := "bytes=" + strconv.FormatInt(2*n/3, 10) + `-|"v1"`
		want := []string{"|", "bytes=" + strconv.FormatInt(n/3, 10) + `-|"v1"`, third, third}
		if !slices.Equal(fs.ranges, want) {
			t.Fatalf("requests %q, want %q", fs.ranges, want)
		}
	})
	t.Run("cut before the first byte restarts", func(t *testing.T) {
		fs, rem := newFleetServer(t, r2)
		fs.cuts = []int64{0}
		b, err := readBundle(rem)
		must(t, err)
		if !bytes.Equal(b, r2.full) || len(fs.ranges) != 2 || fs.ranges[1] != "|" {
			t.Fatalf("requests %q", fs.ranges)
		}
	})
	t.Run("server ignores ranges", func(t *testing.T) {
		fs, rem := newFleetServer(t, r2)
		fs.cuts = []int64{n / 2}
		fs.noRanges = true
		_, err := readBundle(rem)
		if err == nil || !strings.Contains(err.Error(), "does not support ranges") {
			t.Fatalf("got %v", err)
		}
		t.Log(err)
	})
	t.Run("bundle changed", func(t *testing.T) {
		fs, rem := newFleetServer(t, r2)
		fs.cuts = []int64{n / 2}
		rc := rem.Bundle(context.Background(), "2")
		defer rc.Close()
		_, err := io.CopyN(io.Discard, rc, n/4)
		must(t, err)
		fs.mu.Lock()
		fs.etag = `"v2"` // ServeContent answers If-Range "v1" with 200 and the whole new file
		fs.blob = bytes.Clone(fs.blob)
		fs.blob[n-1000] ^= 1
		fs.mu.Unlock()
		_, err = io.Copy(io.Discard, rc)
		if err == nil || !strings.Contains(err.Error(), "changed") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("412", func(t *testing.T) {
		fs, rem := newFleetServer(t, r2)
		fs.cuts = []int64{n / 2}
		rc := rem.Bundle(context.Background(), "2")
		defer rc.Close()
		_, err := io.CopyN(io.Discard, rc, n/4)
		must(t, err)
		fs.mu.Lock()
		fs.status = http.StatusPreconditionFailed
		fs.mu.Unlock()
		_, err = io.Copy(io.Discard, rc)
		if err == nil || !strings.Contains(err.Error(), "412") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		fs, rem := newFleetServer(t, r2)
		fs.cuts = []int64{100, 100, 100, 100, 100, 100}
		_, err := readBundle(rem)
		if err == nil || !strings.Contains(err.Error(), "giving up after 4 tries") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("404", func(t *testing.T) {
		_, rem := newFleetServer(t, r2)
		rc := rem.Bundle(context.Background(), "3")
		defer rc.Close()
		if _, err := io.ReadAll(rc); !errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("context ends the backoff", func(t *testing.T) {
		fs, rem := newFleetServer(t, r2)
		fs.cuts = []int64{n / 2}
		rem.Backoff = time.Hour
		ctx, cancel := context.WithCancel(context.Background())
		rc := rem.Bundle(ctx, "2")
		defer rc.Close()
		_, err := io.CopyN(io.Discard, rc, n/4)
		must(t, err)
		go cancel()
		if _, err := io.Copy(io.Discard, rc); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	})
}
