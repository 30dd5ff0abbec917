package fetch

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func newServer(t *testing.T, data []byte) (*fileServer, *httptest.Server) {
	t.Helper()
	fs := &fileServer{}
	fs.setData(data)
	srv := httptest.NewServer(fs)
	t.Cleanup(srv.Close)
	return fs, srv
}

func TestDownloadVerifies(t *testing.T) {
	data := testImage(3<<20, true)
	fs, srv := newServer(t, data)
	c := &Cache{Dir: t.TempDir()}
	p, err := c.Download(t.Context(), srv.URL+"/os.img.xz", sum(data), WithVersion("1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(c.Dir, "blobs", "sha256", sum(data)); p != want {
		t.Errorf("path = %s, want %s", p, want)
	}
	if !bytes.Equal(readFile(t, p), data) {
		t.Error("downloaded bytes differ")
	}
	reqs := fs.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	if ua := reqs[0].Get("User-Agent"); ua != "edgeimg/1.2.3" {
		t.Errorf("User-Agent = %q", ua)
	}
	if r := reqs[0].Get("Range"); r != "" {
		t.Errorf("fresh download sent Range %q", r)
	}
	if got := cacheFiles(t, c.Dir); !slices.Equal(got, []string{filepath.Join("blobs", "sha256", sum(data))}) {
		t.Errorf("cache holds %v", got)
	}
}

func TestDownloadWithoutChecksum(t *testing.T) {
	data := testImage(1<<20, true)
	fs, srv := newServer(t, data)
	c := &Cache{Dir: t.TempDir()}
	p, err := c.Download(t.Context(), srv.URL+"/k3s-arm64", "")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(p) != sum(data) || !bytes.Equal(readFile(t, p), data) {
		t.Errorf("got %s", p)
	}
	if ua := fs.requests()[0].Get("User-Agent"); !strings.HasPrefix(ua, "edgeimg/") {
		t.Errorf("User-Agent = %q", ua)
	}
}

func TestDownloadResumesAfterCut(t *testing.T) {
	data := testImage(4<<20, true)
	const cut = 1<<20 + 4321
	for _, tc := range []struct {
		name    string
		retries int
		calls   int // Download calls needed
	}{
		{"within one call", 3, 1},
		{"in the next call", 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, srv := newServer(t, data)
			fs.cutAt = cut
			c := &Cache{Dir: t.TempDir()}
			var p string
			var err error
			for i := range tc.calls {
				p, err = c.Download(t.Context(), srv.URL+"/os.img", sum(data), WithRetries(tc.retries))
				if i < tc.calls-1 {
					if err == nil {
						t.Fatal("cut download succeeded")
					}
					if !strings.Contains(err.Error(), srv.URL) {
						t.Errorf("error does not name the URL: %v", err)
					}
					partial := filepath.Join(c.Dir, "downloads", sum(data)+".partial")
					if st, err := os.Stat(partial); err != nil || st.Size() != cut {
						t.Fatalf("partial download: %v, %v", st, err)
					}
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readFile(t, p), data) {
				t.Fatal("resumed download differs")
			}
			reqs := fs.requests()
			if len(reqs) != 2 {
				t.Fatalf("%d requests, want 2", len(reqs))
			}
			if r := reqs[1].Get("Range"); r != "bytes=1052897-" {
				t.Errorf("second request Range = %q, want bytes=%d-", r, cut)
			}
			if ir := reqs[1].Get("If-Range"); ir != fs.etag {
				t.Errorf("second request If-Range = %q, want the ETag %q", ir, fs.etag)
			}
			if sent := fs.bytesSent(); sent != int64(len(data)) {
				t.Errorf("server sent %d body bytes for a %d-byte file", sent, len(data))
			}
			if got := cacheFiles(t, c.Dir); len(got) != 1 {
				t.Errorf("cache holds %v", got)
			}
		})
	}
}

func TestDownloadServerIgnoresRange(t *testing.T) {
	data := testImage(2<<20, true)
	fs, srv := newServer(t, data)
	fs.cutAt = 700000
	fs.ignoreRange = true
	c := &Cache{Dir: t.TempDir()}
	p, err := c.Download(t.Context(), srv.URL+"/os.img", sum(data))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, p), data) {
		t.Fatal("download differs after the server ignored Range")
	}
	reqs := fs.requests()
	if len(reqs) != 2 || reqs[1].Get("Range") != "bytes=700000-" {
		t.Fatalf("requests: %v", reqs)
	}
}

// The file changed on the server between attempts: If-Range no longer matches, the server
// sends the new file whole, and the download restarts instead of splicing two versions.
func TestDownloadFileChangedBetweenAttempts(t *testing.T) {
	old := testImage(2<<20, true)
	data := bytes.Clone(old)
	data[len(data)-1] ^= 0xff
	fs, srv := newServer(t, old)
	fs.cutAt = 1 << 20
	c := &Cache{Dir: t.TempDir()}
	if _, err := c.Download(t.Context(), srv.URL+"/os.img", sum(data), WithRetries(0)); err == nil {
		t.Fatal("cut download succeeded")
	}
	fs.setData(data)
	p, err := c.Download(t.Context(), srv.URL+"/os.img", sum(data))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, p), data) {
		t.Fatal("download differs")
	}
	reqs := fs.requests()
	if len(reqs) != 2 || reqs[1].Get("If-Range") == "" {
		t.Fatalf("requests: %v", reqs)
	}
	if sent := fs.bytesSent(); sent != int64(1<<20+len(data)) {
		t.Errorf("server sent %d bytes", sent)
	}
}

// A partial file that is already complete (a crash before the rename) gets 416 and is used.
func TestDownloadRangeNotSatisfiable(t *testing.T) {
	data := testImage(1<<20, true)
	fs, srv := newServer(t, data)
	c := &Cache{Dir: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(c.Dir, "downloads"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(c.Dir, "downloads", sum(data)+".partial"), data)
	p, err := c.Download(t.Context(), srv.URL+"/os.img", sum(data))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, p), data) {
		t.Fatal("download differs")
	}
	if sent := fs.bytesSent(); sent > 1000 {
		t.Errorf("server sent %d bytes for a complete partial", sent)
	}
	if len(fs.requests()) != 1 {
		t.Errorf("%d requests", len(fs.requests()))
	}
}

func TestDownloadWrongChecksum(t *testing.T) {
	data := testImage(1<<20, true)
	_, srv := newServer(t, data)
	c := &Cache{Dir: t.TempDir()}
	wrong := sum([]byte("something else"))
	_, err := c.Download(t.Context(), srv.URL+"/os.img", wrong)
	if err == nil {
		t.Fatal("no error for a wrong checksum")
	}
	for _, s := range []string{srv.URL + "/os.img", wrong, sum(data)} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
	if got := cacheFiles(t, c.Dir); len(got) != 0 {
		t.Errorf("cache holds %v after a wrong checksum", got)
	}
}

func TestDownloadCachedMakesNoRequest(t *testing.T) {
	data := testImage(1<<20, true)
	fs, srv := newServer(t, data)
	c := &Cache{Dir: t.TempDir()}
	url := srv.URL + "/os.img"
	if _, err := c.Download(t.Context(), url, sum(data)); err != nil {
		t.Fatal(err)
	}
	srv.Close() // any request now fails
	for range 2 {
		p, err := c.Download(t.Context(), url, strings.ToUpper(sum(data)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readFile(t, p), data) {
			t.Fatal("cached bytes differ")
		}
	}
	if n := len(fs.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestDownloadStatus(t *testing.T) {
	data := testImage(1<<20, true)
	t.Run("404 is not retried", func(t *testing.T) {
		fs, srv := newServer(t, data)
		fs.status = []int{http.StatusNotFound}
		_, err := (&Cache{Dir: t.TempDir()}).Download(t.Context(), srv.URL+"/x", sum(data), WithRetryDelay(0))
		if err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("err = %v", err)
		}
		if n := len(fs.requests()); n != 1 {
			t.Errorf("%d requests", n)
		}
	})
	t.Run("503 is retried", func(t *testing.T) {
		fs, srv := newServer(t, data)
		fs.status = []int{http.StatusServiceUnavailable, http.StatusBadGateway}
		p, err := (&Cache{Dir: t.TempDir()}).Download(t.Context(), srv.URL+"/x", sum(data), WithRetryDelay(0))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readFile(t, p), data) {
			t.Fatal("download differs")
		}
		if n := len(fs.requests()); n != 3 {
			t.Errorf("%d requests", n)
		}
	})
	t.Run("retries run out", func(t *testing.T) {
		fs, srv := newServer(t, data)
		fs.status = []int{503, 503, 503}
		_, err := (&Cache{Dir: t.TempDir()}).Download(t.Context(), srv.URL+"/x", sum(data), WithRetryDelay(0), WithRetries(2))
		if err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("err = %v", err)
		}
		if n := len(fs.requests()); n != 3 {
			t.Errorf("%d requests", n)
		}
	})
}

// cancelProgress cancels a context as soon as the first bytes arrive.
type cancelProgress struct {
	NopProgress
	cancel context.CancelFunc
}

func (p cancelProgress) Add(int64) { p.cancel() }

func TestDownloadCancel(t *testing.T) {
	data := testImage(1<<20, true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1048576")
		_, _ = w.Write(data[:100000])
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(t.Context())
	c := &Cache{Dir: t.TempDir()}
	_, err := c.Download(ctx, srv.URL+"/os.img", sum(data), WithProgress(cancelProgress{cancel: cancel}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(c.blobPath(sum(data))); !os.IsNotExist(err) {
		t.Errorf("blob exists after cancellation: %v", err)
	}
}

// Two builds sharing a cache download the same file once and both get it whole.
func TestDownloadConcurrent(t *testing.T) {
	data := testImage(4<<20, true)
	fs, srv := newServer(t, data)
	dir := t.TempDir()
	var wg sync.WaitGroup
	paths := make([]string, 4)
	errs := make([]error, 4)
	for i := range paths {
		wg.Go(func() {
			c := &Cache{Dir: dir}
			paths[i], errs[i] = c.Download(t.Context(), srv.URL+"/os.img", sum(data))
		})
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !bytes.Equal(readFile(t, paths[i]), data) {
			t.Fatalf("download %d differs", i)
		}
	}
	if n := len(fs.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestDownloadRejects(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	if _, err := c.Download(t.Context(), "ftp://example.com/x", ""); err == nil {
		t.Error("ftp URL accepted")
	}
	if _, err := c.Download(t.Context(), "http://127.0.0.1:1/x", "abc"); err == nil || !strings.Contains(err.Error(), "invalid sha256") {
		t.Errorf("short sha256: %v", err)
	}
	if _, err := (&Cache{}).Download(t.Context(), "http://127.0.0.1:1/x", ""); err == nil {
		t.Error("empty cache directory accepted")
	}
}

func TestDefaultClientIsItsOwn(t *testing.T) {
	o := newOptions(nil)
	if o.client == http.DefaultClient || o.client.Transport == nil || o.client.Transport == http.DefaultTransport {
		t.Error("default client shares the process-wide transport")
	}
	if o.client.Timeout != 0 {
		t.Error("default client has an overall timeout, which would cut large downloads")
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in          string
		first, size int64
		ok          bool
	}{
		{"bytes 100-999/1000", 100, 1000, true},
		{"bytes 100-999/*", 100, -1, true},
		{"bytes */1000", -1, 1000, true},
		{"bytes 100-1000/1000", 0, 0, false},
		{"bytes 9-1/10", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"", 0, 0, false},
	} {
		first, size, ok := parseContentRange(tc.in)
		if ok != tc.ok || (ok && (first != tc.first || size != tc.size)) {
			t.Errorf("%q: %d %d %v", tc.in, first, size, ok)
		}
	}
}

// With a weak ETag (not allowed in If-Range) the resume is guarded by Last-Modified.
func TestDownloadResumeWithLastModified(t *testing.T) {
	data := testImage(2<<20, true)
	fs, srv := newServer(t, data)
	fs.etag = `W/"weak"`
	fs.cutAt = 123456
	p, err := (&Cache{Dir: t.TempDir()}).Download(t.Context(), srv.URL+"/os.img", sum(data))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, p), data) {
		t.Fatal("download differs")
	}
	reqs := fs.requests()
	if len(reqs) != 2 || reqs[1].Get("Range") != "bytes=123456-" || reqs[1].Get("If-Range") != "Tue, 14 Nov 2023 22:13:20 GMT" {
		t.Fatalf("requests: %v", reqs)
	}
	if sent := fs.bytesSent(); sent != int64(len(data)) {
		t.Errorf("server sent %d bytes for a %d-byte file", sent, len(data))
	}
}

type recordingProgress struct {
	names  []string
	totals []int64
	added  int64
	done   int
}

func (p *recordingProgress) Start(name string, total int64) {
	p.names, p.totals = append(p.names, name), append(p.totals, total)
}
func (p *recordingProgress) Add(n int64) { p.added += n }
func (p *recordingProgress) Done()       { p.done++ }

type countingTransport struct{ n int }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n++
	return http.DefaultTransport.RoundTrip(r)
}

func TestDownloadOptions(t *testing.T) {
	data := testImage(1<<20, true)
	_, srv := newServer(t, data)
	var prog recordingProgress
	tr := &countingTransport{}
	_, err := (&Cache{Dir: t.TempDir()}).Download(t.Context(), srv.URL+"/dir/os.img", sum(data),
		WithProgress(&prog), WithClient(&http.Client{Transport: tr}))
	if err != nil {
		t.Fatal(err)
	}
	if tr.n != 1 {
		t.Errorf("the client given was used %d times", tr.n)
	}
	if !slices.Equal(prog.names, []string{"os.img"}) || !slices.Equal(prog.totals, []int64{int64(len(data))}) ||
		prog.added != int64(len(data)) || prog.done != 1 {
		t.Errorf("progress: %+v", prog)
	}
}

// A transfer that stops without the connection closing is abandoned after the stall
// timeout and resumed.
func TestDownloadStalled(t *testing.T) {
	data := testImage(2<<20, true)
	fs, srv := newServer(t, data)
	fs.cutAt, fs.hang = 300000, true
	p, err := (&Cache{Dir: t.TempDir()}).Download(t.Context(), srv.URL+"/os.img", sum(data), WithStallTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, p), data) {
		t.Fatal("download differs")
	}
	if reqs := fs.requests(); len(reqs) != 2 || reqs[1].Get("Range") != "bytes=300000-" {
		t.Fatalf("requests: %v", reqs)
	}
}
