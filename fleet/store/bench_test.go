package store_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/store"
	"github.com/edgeimg/edgeimg/fleet/store/storetest"
)

const benchDevices = 10_000

var benchHB = api.Heartbeat{Version: "v1.0.0", Slot: "a", Role: api.RoleServer, UptimeSeconds: 3600, NodeReady: true,
	MemUsed: 900 << 20, MemTotal: 4 << 30, DiskUsed: 3 << 30, DiskTotal: 28 << 30}

// BenchmarkHeartbeat measures the store's heartbeat capacity: heartbeats of a fleet of
// 10,000 devices from many goroutines at once (as the server's handlers send them), written
// by group commit. ns/op is the time per heartbeat at saturation: 1e9/(ns/op) is the most
// heartbeats per second the store takes on this machine.
func BenchmarkHeartbeat(b *testing.B) {
	for _, backend := range storetest.Backends {
		b.Run(backend, func(b *testing.B) {
			s := storetest.Open(b, backend)
			enrollFleet(b, s, benchDevices)
			b.SetParallelism(128) // ×GOMAXPROCS goroutines: enough for batches to form
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := strconv.Itoa(rand.IntN(benchDevices))
					if _, err := s.Heartbeat(ctx, "dev-"+i, "key-"+i, benchHB, t0); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkHeartbeatLoad sends b.N heartbeats open loop at 5,000/s (the load test's spike)
// over 10,000 devices, with the commit pacing as built (gap=4ms) and without it (gap=0s, the
// baseline: each batch starts as soon as a writer is free). It reports this process's CPU
// per heartbeat (the store and the senders; PostgreSQL's own processes are not counted),
// commits per heartbeat and the latency's p99. Run it with -benchtime 20000x or more.
func BenchmarkHeartbeatLoad(b *testing.B) {
	const rate = 5000
	for _, backend := range storetest.Backends {
		for _, gap := range []time.Duration{0, store.MinCommitGap} {
			b.Run(fmt.Sprintf("%s/gap=%s", backend, gap), func(b *testing.B) {
				s := storetest.Open(b, backend)
				store.SetCommitGap(s, gap)
				enrollFleet(b, s, benchDevices)
				lat := make([]time.Duration, b.N)
				stats0, cpu0 := s.BatchStats(), cpuTime(b)
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for i := range b.N {
					if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
						time.Sleep(d)
					}
					wg.Go(func() {
						n := strconv.Itoa(rand.IntN(benchDevices))
						t := time.Now()
						if _, err := s.Heartbeat(ctx, "dev-"+n, "key-"+n, benchHB, t0); err != nil {
							b.Error(err)
						}
						lat[i] = time.Since(t)
					})
				}
				wg.Wait()
				b.StopTimer()
				stats, cpu := s.BatchStats(), cpuTime(b)
				slices.Sort(lat)
				b.ReportMetric(float64(cpu-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/hb")
				b.ReportMetric(float64(stats.Batches-stats0.Batches)/float64(b.N), "commits/hb")
				b.ReportMetric(float64(lat[(b.N*99)/100])/float64(time.Millisecond), "p99-ms")
			})
		}
	}
}

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
