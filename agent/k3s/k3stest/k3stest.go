// Package k3stest has test doubles for package k3s.
package k3stest

import (
	"context"
	"slices"
	"strings"
	"sync"
)

// Recorder is a k3s.Runner that records the commands instead of running them. It is safe for
// concurrent use.
type Recorder struct {
	mu    sync.Mutex
	calls []string
}

// Run records "name arg1 arg2 …" and succeeds.
func (r *Recorder) Run(_ context.Context, name string, args ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, name+" "+strings.Join(args, " "))
	return nil
}

// Calls returns the commands recorded so far, in order.
func (r *Recorder) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}
