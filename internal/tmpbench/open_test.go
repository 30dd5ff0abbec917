package tmpbench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/store"
)

func TestOpen(t *testing.T) {
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "f.db")
	if u := os.Getenv("DBURL"); u != "" {
		db = u
	}
	s, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s.CreateToken(ctx, store.Token{ID: "t", Hash: "h", CreatedAt: now, ExpiresAt: now.Add(time.Hour), Uses: 100000})
	for i := range 10000 {
		if _, err := s.Enroll(ctx, store.Enrollment{DeviceID: fmt.Sprint("d", i), Labels: map[string]string{"a": "b", "c": "d"}, TokenHash: "h", KeySHA256: "k", At: now}); err != nil {
			t.Fatal(err)
		}
	}
	for _, rate := range []int{333, 5000} {
		var lats []time.Duration
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := time.Now()
		n := rate * 6
		for i := range n {
			at := start.Add(time.Duration(i) * time.Second / time.Duration(rate))
			time.Sleep(time.Until(at))
			wg.Go(func() {
				a := time.Now()
				if _, err := s.Heartbeat(ctx, fmt.Sprint("d", (i*7919)%10000), "k", api.Heartbeat{Version: "v1", Slot: "a", UptimeSeconds: 3600, NodeReady: true, MemUsed: 5, MemTotal: 10, DiskTotal: 10}, now); err != nil {
					t.Error(err)
				}
				mu.Lock()
				lats = append(lats, time.Since(a))
				mu.Unlock()
			})
		}
		wg.Wait()
		el := time.Since(start)
		slices.Sort(lats)
		t.Logf("rate %d: %d in %s: %.0f/s p50 %s p95 %s p99 %s max %s", rate, len(lats), el, float64(len(lats))/el.Seconds(), lats[len(lats)/2], lats[len(lats)*95/100], lats[len(lats)*99/100], lats[len(lats)-1])
	}
}
