package images

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// blobCache is a content-addressed store of manifests, configs and layers on disk:
// DIR/blobs/sha256/HEX. A blob is only ever visible under its name after its digest has
// been checked, so a cache hit needs no verification and no network.
type blobCache struct {
	dir string

	mu       sync.Mutex
	inflight map[v1.Hash]*sync.Mutex
}

func newBlobCache(dir string) (*blobCache, error) {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("creating image cache: %w", err)
	}
	return &blobCache{dir: dir, inflight: map[v1.Hash]*sync.Mutex{}}, nil
}

func (c *blobCache) path(h v1.Hash) string {
	return filepath.Join(c.dir, "blobs", h.Algorithm, h.Hex)
}

func (c *blobCache) has(h v1.Hash) bool {
	_, err := os.Stat(c.path(h))
	return err == nil
}

func (c *blobCache) read(h v1.Hash) ([]byte, error) { return os.ReadFile(c.path(h)) }

// lock serialises the fetching of one digest, so that images sharing a layer fetch it once.
func (c *blobCache) lock(h v1.Hash) func() {
	c.mu.Lock()
	m, ok := c.inflight[h]
	if !ok {
		m = &sync.Mutex{}
		c.inflight[h] = m
	}
	c.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// ensure stores the blob h, calling fetch only when it is not cached yet. The fetched
// bytes must hash to h.
func (c *blobCache) ensure(h v1.Hash, fetch func() (io.ReadCloser, error)) error {
	if h.Algorithm != "sha256" {
		return fmt.Errorf("blob %s: only sha256 digests are supported", h)
	}
	unlock := c.lock(h)
	defer unlock()
	if c.has(h) {
		return nil
	}
	rc, err := fetch()
	if err != nil {
		return err
	}
	defer rc.Close()
	return c.put(h, rc)
}

func (c *blobCache) put(h v1.Hash, r io.Reader) error {
	final := c.path(h)
	tmp, err := os.CreateTemp(filepath.Dir(final), ".tmp-"+h.Hex[:12]+"-")
	if err != nil {
		return fmt.Errorf("caching blob %s: %w", h, err)
	}
	defer os.Remove(tmp.Name())
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, sum), r); err != nil {
		tmp.Close()
		return fmt.Errorf("fetching blob %s: %w", h, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("caching blob %s: %w", h, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h.Hex {
		return fmt.Errorf("blob %s: content has digest sha256:%s", h, got)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("caching blob %s: %w", h, err)
	}
	return nil
}
