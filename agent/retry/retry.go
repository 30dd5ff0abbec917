// Package retry holds the agent's waiting between attempts: jittered delays, and a sleep that
// ends with its context.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Jitter spreads d over [d/2, d], so that a fleet of devices coming back online together
// does not retry in step.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// Sleep waits for d; it returns false, at once, when ctx ends first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
