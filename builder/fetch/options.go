package fetch

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"
)

// Option configures Base and Download.
type Option func(*options)

type options struct {
	client     *http.Client
	progress   Progress
	log        *slog.Logger
	userAgent  string
	retries    int
	retryDelay time.Duration
	stall      time.Duration
	maxRawSize int64
}

// WithClient sets the HTTP client used for downloads. Default: a client of its own with
// dial, TLS-handshake and response-header timeouts (http.DefaultTransport is never modified).
// A nil client keeps the default.
func WithClient(c *http.Client) Option {
	return func(o *options) {
		if c != nil {
			o.client = c
		}
	}
}

// WithProgress sets the progress reporter. Default: none (NopProgress).
func WithProgress(p Progress) Option {
	return func(o *options) {
		if p != nil {
			o.progress = p
		}
	}
}

// WithLogger sets the logger for debug and info messages (cache hits, resumed downloads,
// retries). Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithVersion sets the version sent in the "User-Agent: edgeimg/<version>" header.
// Default: the main module's version from the build information, or "devel".
func WithVersion(v string) Option {
	return func(o *options) {
		if v != "" {
			o.userAgent = "edgeimg/" + v
		}
	}
}

// WithRetries sets how many times a download is retried (resuming where it stopped) after a
// network error, a 5xx, 408 or 429 response, or a stalled transfer. Default: 3. Zero disables
// retries: a cut transfer then fails, and the next call resumes it.
func WithRetries(n int) Option {
	return func(o *options) {
		if n >= 0 {
			o.retries = n
		}
	}
}

// WithRetryDelay sets the pause before the first retry of an attempt that made no progress;
// it grows linearly with each attempt. Attempts that received data are retried at once.
// Default: 1s.
func WithRetryDelay(d time.Duration) Option {
	return func(o *options) {
		if d >= 0 {
			o.retryDelay = d
		}
	}
}

// WithStallTimeout sets how long a download may receive no data before the attempt is
// abandoned (and retried). Default: 60s.
func WithStallTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.stall = d
		}
	}
}

// WithMaxRawSize limits the size of a decompressed image, guarding against decompression
// bombs and corrupt size fields. Default: 64 GiB.
func WithMaxRawSize(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.maxRawSize = n
		}
	}
}

func newOptions(opts []Option) *options {
	o := &options{
		progress:   NopProgress{},
		log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		userAgent:  "edgeimg/" + buildVersion(),
		retries:    3,
		retryDelay: time.Second,
		stall:      60 * time.Second,
		maxRawSize: 64 << 30,
	}
	for _, opt := range opts {
		opt(o)
	}
	if o.client == nil {
		o.client = defaultClient()
	}
	return o
}

// defaultClient returns a client with its own transport. There is no overall timeout
// (images are large); stalled transfers are caught by the stall timeout instead.
func defaultClient() *http.Client {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          10,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   15 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
	}
}

func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
