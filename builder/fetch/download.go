package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Download brings the file at rawURL (http or https) into the cache and returns its path,
// Dir/blobs/sha256/<sha256>. With sha256hex set, a blob already cached under that name is
// returned without any network access, and a download whose bytes do not match is deleted and
// reported. With sha256hex empty the file is always downloaded and named after its own sha256
// (the base name of the returned path).
//
// Interrupted downloads resume where they stopped, by an HTTP Range request (guarded by
// If-Range when the server gave an ETag or Last-Modified), both within one call (see
// WithRetries) and across calls and processes sharing the cache.
func (c *Cache) Download(ctx context.Context, rawURL, sha256hex string, opts ...Option) (string, error) {
	if c.Dir == "" {
		return "", errors.New("cache directory not set")
	}
	o := newOptions(opts)
	want, err := parseSHA256(sha256hex)
	if err != nil {
		return "", fmt.Errorf("downloading %s: %w", rawURL, err)
	}
	u, ok := httpURL(rawURL)
	if !ok {
		return "", fmt.Errorf("downloading %s: not an http or https URL", rawURL)
	}
	return c.download(ctx, u, want, o)
}

// partialMeta remembers what the server said about a partial download's file, for If-Range.
type partialMeta struct {
	URL          string `json:"url"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
}

type fetchResult struct {
	sum     string // sha256 of the whole partial file
	resumed bool   // whether bytes from an earlier attempt were kept
}

// retryableError is an attempt's failure that another attempt may overcome.
type retryableError struct {
	err        error
	progressed bool // the attempt received data, so retry without waiting
}

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

var errStalled = errors.New("download stalled")

func (c *Cache) download(ctx context.Context, u *url.URL, want string, o *options) (string, error) {
	name := u.Redacted()
	if want != "" {
		if blob := c.blobPath(want); isFile(blob) {
			o.log.Debug("using cached download", "url", name, "path", blob)
			return blob, nil
		}
	}
	downloads := filepath.Join(c.Dir, "downloads")
	if err := c.mkdirs(downloads, filepath.Join(c.Dir, "blobs", "sha256")); err != nil {
		return "", err
	}
	key := want
	if key == "" {
		h := sha256.Sum256([]byte(u.String()))
		key = "url-" + hex.EncodeToString(h[:])
	}
	unlock, err := lockFile(ctx, c.lockPath("download-"+key))
	if err != nil {
		return "", fmt.Errorf("downloading %s: %w", name, err)
	}
	defer unlock()
	if want != "" {
		if blob := c.blobPath(want); isFile(blob) { // another build finished it while we waited
			return blob, nil
		}
	}

	partial := filepath.Join(downloads, key+".partial")
	restarted := false
	var res fetchResult
	for attempt := 0; ; attempt++ {
		res, err = c.fetch(ctx, u, partial, o)
		if err != nil {
			if ctx.Err() != nil {
				return "", fmt.Errorf("downloading %s: %w", name, context.Cause(ctx))
			}
			var re *retryableError
			if !errors.As(err, &re) || attempt >= o.retries {
				return "", fmt.Errorf("downloading %s: %w", name, err)
			}
			o.log.Info("retrying download", "url", name, "attempt", attempt+1, "error", err)
			if !re.progressed {
				if err := sleep(ctx, o.retryDelay*time.Duration(attempt+1)); err != nil {
					return "", fmt.Errorf("downloading %s: %w", name, err)
				}
			}
			continue
		}
		if want == "" || res.sum == want {
			break
		}
		removePartial(partial)
		if res.resumed && !restarted {
			// The kept bytes may belong to another version of the file: start over once.
			o.log.Info("resumed download does not match its sha256; starting over", "url", name)
			restarted = true
			continue
		}
		return "", fmt.Errorf("downloading %s: sha256 mismatch: expected %s, got %s", name, want, res.sum)
	}
	blob := c.blobPath(res.sum)
	if err := os.Rename(partial, blob); err != nil {
		return "", fmt.Errorf("storing download of %s: %w", name, err)
	}
	_ = os.Remove(partial + ".meta")
	o.log.Debug("downloaded", "url", name, "path", blob)
	return blob, nil
}

// fetch makes one attempt at completing the partial download at partialPath.
func (c *Cache) fetch(parent context.Context, u *url.URL, partialPath string, o *options) (fetchResult, error) {
	f, err := os.OpenFile(partialPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fetchResult{}, fmt.Errorf("opening partial download: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fetchResult{}, fmt.Errorf("reading partial download: %w", err)
	}
	off := st.Size()
	meta := readMeta(partialPath + ".meta")

	// The stall timer cancels the request when no data arrives for o.stall.
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	timer := time.AfterFunc(o.stall, func() { cancel(errStalled) })
	defer timer.Stop()
	stalled := func(err error, progressed bool) error {
		if errors.Is(context.Cause(ctx), errStalled) && parent.Err() == nil {
			return &retryableError{fmt.Errorf("no data received for %s", o.stall), progressed}
		}
		return &retryableError{err, progressed}
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fetchResult{}, err
	}
	req.Header.Set("User-Agent", o.userAgent)
	req.Header.Set("Accept-Encoding", "identity") // no transparent decompression: bytes as published
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		if meta.URL == u.String() {
			if meta.ETag != "" && !strings.HasPrefix(meta.ETag, "W/") {
				req.Header.Set("If-Range", meta.ETag)
			} else if meta.LastModified != "" {
				req.Header.Set("If-Range", meta.LastModified)
			}
		}
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return fetchResult{}, stalled(err, false)
	}
	defer resp.Body.Close()

	total := int64(-1)
	resumed := false
	restart := func() error {
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("truncating partial download: %w", err)
		}
		_ = os.Remove(partialPath + ".meta")
		return nil
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		start, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			if err := restart(); err != nil {
				return fetchResult{}, err
			}
			return fetchResult{}, &retryableError{fmt.Errorf("server answered the range from %d with Content-Range %q; starting over", off, resp.Header.Get("Content-Range")), true}
		}
		total, resumed = size, true
		o.log.Info("resuming download", "url", u.Redacted(), "offset", off)
	case resp.StatusCode == http.StatusOK:
		if off > 0 {
			o.log.Info("server sent the whole file; restarting download", "url", u.Redacted())
			if err := restart(); err != nil {
				return fetchResult{}, err
			}
			off = 0
		}
		total = resp.ContentLength
		m := partialMeta{URL: u.String(), ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
		mb, _ := json.Marshal(m)
		if err := writeFileAtomic(partialPath+".meta", mb); err != nil {
			return fetchResult{}, err
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && off > 0:
		if _, size, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && size == off {
			// The partial file is already complete.
			sum, err := hashPrefix(f, off)
			return fetchResult{sum, true}, err
		}
		if err := restart(); err != nil {
			return fetchResult{}, err
		}
		return fetchResult{}, &retryableError{errors.New("server rejected the range of the partial download; starting over"), true}
	default:
		err := fmt.Errorf("unexpected status %s", resp.Status)
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests {
			return fetchResult{}, &retryableError{err, false}
		}
		return fetchResult{}, err
	}

	// Hash the bytes kept from earlier attempts, then append the rest.
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, off)); err != nil {
		return fetchResult{}, fmt.Errorf("reading partial download: %w", err)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return fetchResult{}, fmt.Errorf("seeking partial download: %w", err)
	}
	o.progress.Start(path.Base(u.Path), total)
	defer o.progress.Done()
	if off > 0 {
		o.progress.Add(off)
	}
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, rerr := resp.Body.Read(buf)
		if m > 0 {
			timer.Reset(o.stall)
			if _, err := f.Write(buf[:m]); err != nil {
				return fetchResult{}, fmt.Errorf("writing partial download: %w", err)
			}
			h.Write(buf[:m])
			o.progress.Add(int64(m))
			n += int64(m)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fetchResult{}, stalled(fmt.Errorf("reading response: %w", rerr), n > 0)
		}
	}
	if total >= 0 && off+n != total {
		return fetchResult{}, &retryableError{fmt.Errorf("response ended after %d of %d bytes: %w", off+n, total, io.ErrUnexpectedEOF), n > 0}
	}
	if err := f.Sync(); err != nil {
		return fetchResult{}, fmt.Errorf("writing partial download: %w", err)
	}
	return fetchResult{hex.EncodeToString(h.Sum(nil)), resumed}, nil
}

// parseContentRange parses "bytes first-last/size" or "bytes */size"; first is -1 in the
// second form and size is -1 when given as "*".
func parseContentRange(s string) (first, size int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, sz, found := strings.Cut(strings.TrimSpace(rest), "/")
	if !found {
		return 0, 0, false
	}
	size = -1
	if sz != "*" {
		v, err := strconv.ParseInt(sz, 10, 64)
		if err != nil || v < 0 {
			return 0, 0, false
		}
		size = v
	}
	if rng == "*" {
		return -1, size, true
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first || (size >= 0 && last >= size) {
		return 0, 0, false
	}
	return first, size, true
}

func hashPrefix(f *os.File, n int64) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, n)); err != nil {
		return "", fmt.Errorf("reading partial download: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func readMeta(path string) partialMeta {
	var m partialMeta
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &m)
	}
	return m
}

func removePartial(partial string) {
	_ = os.Remove(partial)
	_ = os.Remove(partial + ".meta")
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
