package builder

import (
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/edgeimg/edgeimg/builder/lock"
)

// Progress receives progress of long steps (downloads, disk writing, compression). Start is
// called with a step name and its total in bytes (0 when unknown), Add with bytes done since
// the last call, Done at the end of the step.
type Progress interface {
	Start(name string, total int64)
	Add(n int64)
	Done()
}

type nopProgress struct{}

func (nopProgress) Start(string, int64) {}
func (nopProgress) Add(int64)           {}
func (nopProgress) Done()               {}

type options struct {
	outDir   string
	cacheDir string
	epoch    *time.Time
	agent    string
	logger   *slog.Logger
	progress Progress
	client   *http.Client
	version  string
	// lock, lockFile and updateLock: see WithLock and WithUpdateLock (k3s.go).
	lock       *lock.Lock
	lockFile   string
	updateLock bool
}

// Option configures Build.
type Option func(*options)

// WithOutputDir sets where the outputs go. Default: the spec's output.dir.
func WithOutputDir(dir string) Option { return func(o *options) { o.outDir = dir } }

// WithCacheDir sets the download and base-image cache. Default: $XDG_CACHE_HOME/edgeimg.
func WithCacheDir(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// WithEpoch sets the time of every timestamp the builder writes (SOURCE_DATE_EPOCH).
// Default: the newest mtime in the base image's root filesystem.
func WithEpoch(t time.Time) Option { return func(o *options) { o.epoch = &t } }

// WithAgent sets the path of the linux edgeimg-agent binary for the board's architecture.
// It is required: the agent grows the data partition on first boot.
func WithAgent(path string) Option { return func(o *options) { o.agent = path } }

// WithLogger sets a logger for what the build does. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithProgress sets a progress reporter. Default: none.
func WithProgress(p Progress) Option { return func(o *options) { o.progress = p } }

// WithHTTPClient sets the client for downloads. Default: a client with timeouts, not
// http.DefaultClient.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// WithVersion sets the builder version recorded in the image and the report. Default "dev".
func WithVersion(v string) Option { return func(o *options) { o.version = v } }

func makeOptions(opts []Option) *options {
	o := &options{
		logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		progress: nopProgress{},
		version:  "dev",
	}
	for _, f := range opts {
		f(o)
	}
	return o
}
