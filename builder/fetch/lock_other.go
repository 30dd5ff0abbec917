//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package fetch

import (
	"context"
	"sync"
)

var locks sync.Map // path → *sync.Mutex

// lockFile serialises users of path within this process only: this platform has no flock.
// Files in the cache are still written under unique temporary names and renamed into place.
func lockFile(ctx context.Context, path string) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m, _ := locks.LoadOrStore(path, new(sync.Mutex))
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock, nil
}
