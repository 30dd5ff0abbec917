package tmpbench

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/store"
)

func TestHB(t *testing.T) {
	ctx := context.Background()
	s, err := store.Open(ctx, filepath.Join(t.TempDir(), "f.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s.CreateToken(ctx, store.Token{ID: "t", Hash: "h", CreatedAt: now, ExpiresAt: now.Add(time.Hour), Uses: 100000})
	for i := range 10000 {
		if _, err := s.Enroll(ctx, store.Enrollment{DeviceID: fmt.Sprint("d", i), TokenHash: "h", KeySHA256: "k", At: now}); err != nil {
			t.Fatal(err)
		}
	}
	var lats []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	for g := range 1000 {
		wg.Go(func() {
			for i := range 50 {
				a := time.Now()
				if _, err := s.Heartbeat(ctx, fmt.Sprint("d", (g*100+i)%10000), "k", api.Heartbeat{Version: "v1", MemTotal: 10, DiskTotal: 10}, now); err != nil {
					t.Error(err)
				}
				mu.Lock()
				lats = append(lats, time.Since(a))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	el := time.Since(t0)
	slices.Sort(lats)
	t.Logf("%d in %s: %.0f/s p50 %s p95 %s p99 %s max %s", len(lats), el, float64(len(lats))/el.Seconds(), lats[len(lats)/2], lats[len(lats)*95/100], lats[len(lats)*99/100], lats[len(lats)-1])
}
