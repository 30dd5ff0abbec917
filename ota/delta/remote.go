package delta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// ErrNotFound is matched (errors.Is) by the error of an answer 404: the release, its index or
// the chunk is not on the fleet server (a fleet without indexes: fall back to Bundle).
var ErrNotFound = errors.New("not found")

// HTTPError is a non-2xx answer of the fleet server.
type HTTPError struct {
	URL    string
	Status int    // HTTP status code
	Code   string // api.Error.Code, if the server sent one
	Msg    string // api.Error.Error, if the server sent one
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("GET %s: %d %s", e.URL, e.Status, http.StatusText(e.Status))
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Code != "" {
		s += " (" + e.Code + ")"
	}
	return s
}

// Is makes errors.Is(err, ErrNotFound) true for a 404.
func (e *HTTPError) Is(target error) bool {
	return target == ErrNotFound && e.Status == http.StatusNotFound
}

// Remote is the device's side of the fleet's release routes (fleet/api/release.go). Client
// is the device's mTLS client; BaseURL the server's ("https://fleet.example:8443").
type Remote struct {
	Client  *http.Client
	BaseURL string
	// Retries bounds how many times Bundle tries again after a failure in a row (a dropped
	// connection, a 5xx); 0 means 8.
	Retries int
	// Backoff is the wait before Bundle's first retry, doubled after each failure in a row up
	// to 30 s; 0 means 1 s.
	Backoff time.Duration
}

const maxErrorBody = 64 << 10

func (r *Remote) client() *http.Client {
	if r.Client != nil {
		return r.Client
	}
	return http.DefaultClient
}

func (r *Remote) url(path string) string { return strings.TrimSuffix(r.BaseURL, "/") + path }

func releaseURL(version, what string) string {
	return api.PathReleases + url.PathEscape(version) + "/" + what
}

// Manifest returns release version's manifest.json and manifest.sig as the server stores
// them (exact bytes; the caller verifies them, e.g. with bundle.Open on the stream).
func (r *Remote) Manifest(ctx context.Context, version string) (manifest, sig []byte, err error) {
	manifest, err = r.get(ctx, releaseURL(version, "manifest"), bundle.MaxManifestSize)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest of release %s: %w", version, err)
	}
	sig, err = r.get(ctx, releaseURL(version, "signature"), bundle.MaxSignatureSize)
	if err != nil {
		return nil, nil, fmt.Errorf("signature of release %s: %w", version, err)
	}
	return manifest, sig, nil
}

// Index returns the chunk index of a part of release version, unparsed (see ParseIndex).
func (r *Remote) Index(ctx context.Context, version, part string) ([]byte, error) {
	b, err := r.get(ctx, releaseURL(version, "index/"+url.PathEscape(part)), MaxIndex)
	if err != nil {
		return nil, fmt.Errorf("index of part %s of release %s: %w", part, version, err)
	}
	return b, nil
}

// Chunk returns the bytes of the chunk with the given sha256 (at most MaxChunk; the caller
// checks the hash). It implements ChunkSource.
func (r *Remote) Chunk(ctx context.Context, sum string) ([]byte, error) {
	b, err := r.get(ctx, api.PathChunks+url.PathEscape(sum), MaxChunk)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", sum, err)
	}
	return b, nil
}

var _ ChunkSource = (*Remote)(nil)

// get fetches a small answer of at most limit bytes.
func (r *Remote) get(ctx context.Context, path string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url(path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, httpError(resp)
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("GET %s: answer of %d bytes, more than %d", req.URL, resp.ContentLength, limit)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", req.URL, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: answer of more than %d bytes", req.URL, limit)
	}
	return b, nil
}

// httpError reads a non-2xx answer's api.Error, if any.
func httpError(resp *http.Response) error {
	e := &HTTPError{URL: resp.Request.URL.String(), Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var ae api.Error
	if json.Unmarshal(b, &ae) == nil {
		e.Code, e.Msg = ae.Code, ae.Error
	}
	return e
}

// Bundle returns the whole bundle of release version as a stream. When the connection drops
// or the server fails (5xx) mid-way, it asks again for the rest (Range: bytes=N-, If-Range:
// the first answer's ETag) after a backoff, at most Retries times in a row, and accepts only
// a 206 starting at byte N. A bundle that changed on the server (a 200 or 412 to the range
// request), a server that ignores ranges or gave no strong ETag, any other 4xx, or running
// out of retries ends the stream with an error; ctx ends it too. The request is made by the
// first Read.
func (r *Remote) Bundle(ctx context.Context, version string) io.ReadCloser {
	retries, backoff := r.Retries, r.Backoff
	if retries <= 0 {
		retries = 8
	}
	if backoff <= 0 {
		backoff = time.Second
	}
	return &resumer{r: r, ctx: ctx, url: r.url(releaseURL(version, "bundle")), version: version,
		retries: retries, backoff: backoff, size: -1}
}

// resumer is Bundle's reader.
type resumer struct {
	r            *Remote
	ctx          context.Context
	url, version string
	retries      int
	backoff      time.Duration
	body         io.ReadCloser
	off, size    int64  // bytes read so far; the bundle's size (-1: unknown)
	etag         string // the first answer's strong ETag
	failures     int    // in a row
	err          error
}

// errFatal marks errors not worth retrying.
type errFatal struct{ error }

func (e errFatal) Unwrap() error { return e.error }

func (b *resumer) Read(p []byte) (int, error) {
	for {
		if b.err != nil {
			return 0, b.err
		}
		if err := b.ctx.Err(); err != nil {
			b.fail(err)
			continue
		}
		if b.body == nil {
			if err := b.open(); err != nil {
				var f errFatal
				if errors.As(err, &f) {
					b.fail(f.error)
				} else {
					b.transient(err)
				}
				continue
			}
		}
		n, err := b.body.Read(p)
		b.off += int64(n)
		if n > 0 {
			b.failures = 0
		}
		if b.size >= 0 && b.off > b.size {
			b.fail(fmt.Errorf("the server sent more than the %d bytes it announced", b.size))
			return 0, b.err
		}
		switch {
		case err == nil:
			return n, nil
		case err == io.EOF && (b.size < 0 || b.off == b.size):
			b.body.Close()
			b.body = nil
			b.err = io.EOF
			return n, io.EOF
		case err == io.EOF:
			err = io.ErrUnexpectedEOF
		}
		b.body.Close()
		b.body = nil
		b.transient(err)
		if n > 0 {
			return n, nil
		}
	}
}

func (b *resumer) fail(err error) {
	if b.body != nil {
		b.body.Close()
		b.body = nil
	}
	if err == context.Canceled || err == context.DeadlineExceeded {
		b.err = fmt.Errorf("downloading the bundle of release %s: %w", b.version, err)
		return
	}
	b.err = fmt.Errorf("downloading the bundle of release %s at byte %d: %w", b.version, b.off, err)
}

// transient counts a failure and waits before the next try, or ends the stream.
func (b *resumer) transient(err error) {
	b.failures++
	if b.failures > b.retries {
		b.fail(fmt.Errorf("giving up after %d tries: %w", b.failures, err))
		return
	}
	d := b.backoff << (b.failures - 1)
	if d > 30*time.Second || d <= 0 {
		d = 30 * time.Second
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.ctx.Done():
		b.fail(b.ctx.Err())
	}
}

// open requests the bundle from b.off on.
func (b *resumer) open() error {
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, b.url, nil)
	if err != nil {
		return errFatal{err}
	}
	if b.off > 0 {
		if b.etag == "" {
			return errFatal{errors.New("the server gave no strong ETag, so the download cannot resume safely")}
		}
		req.Header.Set("Range", "bytes="+strconv.FormatInt(b.off, 10)+"-")
		req.Header.Set("If-Range", b.etag)
	}
	resp, err := b.r.client().Do(req)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			resp.Body.Close()
		}
	}()
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return httpError(resp)
	case b.off == 0 && resp.StatusCode == http.StatusOK:
		// (Re)starting from zero: whatever the server has now is as good as before.
		etag := resp.Header.Get("ETag")
		b.etag = ""
		if strings.HasPrefix(etag, `"`) {
			b.etag = etag
		}
		b.size = resp.ContentLength
	case b.off > 0 && resp.StatusCode == http.StatusPartialContent:
		start, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return errFatal{err}
		}
		if start != b.off {
			return errFatal{fmt.Errorf("asked for bytes from %d, the server sent from %d", b.off, start)}
		}
		if total >= 0 && b.size >= 0 && total != b.size {
			return errFatal{fmt.Errorf("the bundle is now %d bytes, it was %d: it changed on the server", total, b.size)}
		}
	case b.off > 0 && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPreconditionFailed):
		return errFatal{fmt.Errorf("resuming at byte %d: answer %d: the bundle changed on the server or the server does not support ranges", b.off, resp.StatusCode)}
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return errFatal{fmt.Errorf("GET %s: unexpected answer %d", b.url, resp.StatusCode)}
	default:
		return errFatal{httpError(resp)}
	}
	ok = true
	b.body = resp.Body
	return nil
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*": -1).
func parseContentRange(s string) (start, total int64, err error) {
	bad := fmt.Errorf("bad Content-Range %q", s)
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, bad
	}
	a, e, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, bad
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(e, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= end {
			return 0, 0, bad
		}
	}
	return start, total, nil
}

// Close ends the download.
func (b *resumer) Close() error {
	if b.body != nil {
		b.body.Close()
		b.body = nil
	}
	if b.err == nil {
		b.err = errors.New("bundle download closed")
	}
	return nil
}
