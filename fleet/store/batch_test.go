package store_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/store"
	"github.com/edgeimg/edgeimg/fleet/store/storetest"
)

// TestHeartbeatBatches sends heartbeats from many goroutines, so that they share
// transactions, with refused ones among them: each is answered for itself.
func TestHeartbeatBatches(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s store.Store) {
		const devices = 20
		enrollFleet(t, s, devices)
		if _, err := s.Revoke(ctx, "dev-0", t0); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		ok := map[string]int{}
		var wg sync.WaitGroup
		for g := range 2 * devices {
			wg.Go(func() {
				id, key := "dev-"+strconv.Itoa(g%devices), "key-"+strconv.Itoa(g%devices)
				for n := range 25 {
					k := key
					if n%5 == 4 {
						k = "forged"
					}
					d, err := s.Heartbeat(ctx, id, k, api.Heartbeat{Version: "v2", UptimeSeconds: int64(n), MemTotal: 1, DiskTotal: 1}, t0)
					switch {
					case id == "dev-0":
						if !errors.Is(err, store.ErrRevoked) {
							t.Errorf("revoked %s: %v", id, err)
						}
					case k == "forged":
						if !errors.Is(err, store.ErrKeyMismatch) {
							t.Errorf("forged key %s: %v", id, err)
						}
					case err != nil:
						t.Errorf("%s: %v", id, err)
					case d.Role.Kind != api.RoleServer || d.Reset || d.Version != "":
						t.Errorf("%s: answered %+v", id, d)
					default:
						mu.Lock()
						ok[id]++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		if _, err := s.Heartbeat(ctx, "nobody", "k", api.Heartbeat{}, t0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown device: %v", err)
		}
		for i := range devices {
			id := "dev-" + strconv.Itoa(i)
			hbs, err := s.Heartbeats(ctx, id, store.HeartbeatHistory)
			if err != nil || len(hbs) != ok[id] || (i > 0 && ok[id] != 40) {
				t.Errorf("%s: %d heartbeats stored, %d acknowledged: %v", id, len(hbs), ok[id], err)
			}
			if i == 0 {
				continue
			}
			d, err := s.Device(ctx, id)
			if err != nil || d.Version != "v2" || d.LastHeartbeat == nil || d.LastHeartbeat.MemTotal != 1 || d.Labels["own"] != "x" {
				t.Errorf("%s after its heartbeats: %+v, %v", id, d, err)
			}
		}
	})
}

// TestHeartbeatKill9 kills a process that sends heartbeats from several goroutines: every
// acknowledged heartbeat is found after a restart (answers come after the batch's commit).
func TestHeartbeatKill9(t *testing.T) {
	const workers = 8
	if path := os.Getenv("EDGEIMG_STORE_HB_CHILD"); path != "" {
		s, err := store.Open(ctx, path)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := range workers {
			wg.Go(func() {
				id := "dev-" + strconv.Itoa(g)
				for n := int64(1); ; n++ {
					if _, err := s.Heartbeat(ctx, id, "key", api.Heartbeat{UptimeSeconds: n}, t0); err != nil {
						mu.Lock()
						fmt.Println("error", err)
						os.Exit(1)
					}
					mu.Lock()
					fmt.Println("ack", g, n)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	if testing.Short() {
		t.Skip("runs a child process")
	}
	path := filepath.Join(t.TempDir(), "fleet.db")
	s, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	mkToken(t, s, "tok", workers, 1<<40, nil)
	for g := range workers {
		if _, err := s.Enroll(ctx, enr("dev-"+strconv.Itoa(g), "tok", "key", t0)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHeartbeatKill9$")
	cmd.Env = append(os.Environ(), "EDGEIMG_STORE_HB_CHILD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[int]int64{}
	sc := bufio.NewScanner(out)
	for lines := 0; lines < 2000 && sc.Scan(); lines++ {
		var g int
		var n int64
		if _, err := fmt.Sscanf(sc.Text(), "ack %d %d", &g, &n); err != nil {
			t.Fatalf("child: %q", sc.Text())
		}
		acked[g] = n
	}
	_ = cmd.Process.Kill() // SIGKILL
	_ = cmd.Wait()
	s2, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for g, n := range acked {
		d, err := s2.Device(ctx, "dev-"+strconv.Itoa(g))
		if err != nil || d.LastHeartbeat == nil || d.LastHeartbeat.UptimeSeconds < n {
			t.Errorf("dev-%d: heartbeat %d was acknowledged, the store has %+v (%v)", g, n, d.LastHeartbeat, err)
		}
	}
}

// TestHeartbeatPacing sends heartbeats from many goroutines at once: under load a batch
// starts at most once per store.MinCommitGap, so the heartbeats share transactions instead
// of each paying for its own commit.
func TestHeartbeatPacing(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s store.Store) {
		sql := s.(*store.SQL)
		const devices, senders, each = 64, 64, 30
		enrollFleet(t, s, devices)
		before := sql.BatchStats()
		start := time.Now()
		var wg sync.WaitGroup
		for g := range senders {
			wg.Go(func() {
				for range each {
					if _, err := s.Heartbeat(ctx, "dev-"+strconv.Itoa(g), "key-"+strconv.Itoa(g), api.Heartbeat{Version: "v1"}, t0); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		after := sql.BatchStats()
		batches, hbs := after.Batches-before.Batches, after.Heartbeats-before.Heartbeats
		// Under load a batch starts at most once per gap (the first two may come sooner).
		limit := uint64(elapsed/store.MinCommitGap) + 2
		t.Logf("%d heartbeats in %d batches in %s (at most %d)", hbs, batches, elapsed, limit)
		if hbs != senders*each {
			t.Errorf("%d heartbeats batched, want %d", hbs, senders*each)
		}
		if batches > limit {
			t.Errorf("%d batches in %s: more than one per %s (%d)", batches, elapsed, store.MinCommitGap, limit)
		}
		if batches*2 > hbs {
			t.Errorf("%d heartbeats from %d senders in %d batches: they did not share transactions", hbs, senders, batches)
		}
	})
}

// enrollFleet enrolls n devices with one token: dev-0 with key key-0, dev-1 with key-1, and
// so on, 32 at a time.
func enrollFleet(tb testing.TB, s store.Store, n int) {
	tb.Helper()
	mkToken(tb, s, "fleet", n, 1<<40, nil)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < n; i += 32 {
				if _, err := s.Enroll(ctx, enr("dev-"+strconv.Itoa(i), "fleet", "key-"+strconv.Itoa(i), t0)); err != nil {
					tb.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if tb.Failed() {
		tb.FailNow()
	}
}
