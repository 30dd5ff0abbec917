package store_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

var (
	ctx = context.Background()
	t0  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func hash(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }

func mkToken(t testing.TB, s store.Store, secret string, uses int, ttl time.Duration, labels map[string]string) {
	t.Helper()
	err := s.CreateToken(ctx, store.Token{ID: hash(secret)[:12], Hash: hash(secret), CreatedAt: t0, ExpiresAt: t0.Add(ttl), Uses: uses, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
}

func enr(id, secret, key string, at time.Time) store.Enrollment {
	return store.Enrollment{DeviceID: id, Hostname: "h-" + id, Labels: map[string]string{"site": "device", "own": "x"}, Version: "v1", Slot: "a",
		TokenHash: hash(secret), KeySHA256: key, CertSerial: "s-" + id, CertNotAfter: at.Add(30 * 24 * time.Hour), At: at}
}

func usesLeft(t *testing.T, s store.Store, secret string) int {
	t.Helper()
	toks, err := s.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.ID == hash(secret)[:12] {
			return tk.UsesLeft
		}
	}
	t.Fatalf("no token %s", secret)
	return 0
}

func TestTokensAndEnrollment(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s store.Store) {
		mkToken(t, s, "one-use", 1, time.Hour, map[string]string{"site": "berlin"})
		mkToken(t, s, "short", 5, time.Minute, nil)

		if _, err := s.Enroll(ctx, enr("d1", "forged", "k1", t0)); !errors.Is(err, store.ErrUnknownToken) {
			t.Errorf("forged token: %v", err)
		}
		if _, err := s.Enroll(ctx, enr("d1", "short", "k1", t0.Add(time.Minute))); !errors.Is(err, store.ErrExpiredToken) {
			t.Errorf("expired token: %v", err)
		}
		d, err := s.Enroll(ctx, enr("d1", "one-use", "k1", t0))
		if err != nil {
			t.Fatal(err)
		}
		if d.State != api.StateActive || d.Labels["site"] != "berlin" || d.Labels["own"] != "x" || d.Role.Kind != api.RoleServer ||
			d.TokenID != hash("one-use")[:12] || d.Hostname != "h-d1" || !d.EnrolledAt.Equal(t0) {
			t.Errorf("enrolled device: %+v", d)
		}
		if _, err := s.Enroll(ctx, enr("d2", "one-use", "k2", t0)); !errors.Is(err, store.ErrUsedUpToken) {
			t.Errorf("used-up token: %v", err)
		}
		// A retry of the same device with the same key is idempotent and uses nothing.
		if d2, err := s.Enroll(ctx, enr("d1", "one-use", "k1", t0.Add(time.Second))); err != nil || d2.KeySHA256 != "k1" {
			t.Errorf("retry: %v", err)
		}
		// Another key for an enrolled device is a conflict, even with a good token.
		if _, err := s.Enroll(ctx, enr("d1", "short", "k-other", t0)); !errors.Is(err, store.ErrConflict) {
			t.Errorf("other key: %v", err)
		}
		if n := usesLeft(t, s, "one-use"); n != 0 {
			t.Errorf("uses left %d", n)
		}
		if n := usesLeft(t, s, "short"); n != 5 {
			t.Errorf("refusals used the token: %d left", n)
		}
		devs, err := s.Devices(ctx, store.DeviceFilter{})
		if err != nil || len(devs) != 1 {
			t.Fatalf("devices: %v %v", devs, err)
		}
		evs, _ := s.Events(ctx, "d1", 10)
		if len(evs) != 2 || evs[0].Kind != "enrolled again (same key)" || evs[1].Kind != "enrolled" {
			t.Errorf("events: %+v", evs)
		}
		if _, err := s.Enroll(ctx, store.Enrollment{DeviceID: "d1", ByCert: true, KeySHA256: "k1", At: t0}); err != nil {
			t.Errorf("re-enroll by certificate: %v", err)
		}
		if _, err := s.Enroll(ctx, store.Enrollment{DeviceID: "nobody", ByCert: true, KeySHA256: "k1", At: t0}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("by certificate, unknown: %v", err)
		}
	})
}

func TestResetRevokeHeartbeat(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s store.Store) {
		mkToken(t, s, "tok", 10, time.Hour, nil)
		if _, err := s.Enroll(ctx, enr("d1", "tok", "k1", t0)); err != nil {
			t.Fatal(err)
		}
		for i := range store.HeartbeatHistory + 6 {
			at := t0.Add(time.Duration(i) * time.Second)
			desired, err := s.Heartbeat(ctx, "d1", "k1", api.Heartbeat{Version: "v" + strconv.Itoa(i), Slot: "b", UptimeSeconds: int64(i), MemTotal: 4}, at)
			if err != nil {
				t.Fatal(err)
			}
			if desired != (api.Desired{Role: api.Role{Kind: api.RoleServer}}) {
				t.Fatalf("answer to heartbeat %d: %+v", i, desired)
			}
			d, err := s.Device(ctx, "d1")
			if err != nil || d.Version != "v"+strconv.Itoa(i) || d.Slot != "b" || !d.LastSeen.Equal(at) || d.LastHeartbeat.UptimeSeconds != int64(i) {
				t.Fatalf("device after heartbeat %d: %+v, %v", i, d, err)
			}
		}
		hbs, err := s.Heartbeats(ctx, "d1", 1000)
		if err != nil || len(hbs) != store.HeartbeatHistory || hbs[0].Heartbeat.UptimeSeconds != store.HeartbeatHistory+5 || hbs[len(hbs)-1].Heartbeat.UptimeSeconds != 6 {
			t.Fatalf("history: %d entries, %v", len(hbs), err)
		}
		if _, err := s.Heartbeat(ctx, "d1", "k-other", api.Heartbeat{}, t0); !errors.Is(err, store.ErrKeyMismatch) {
			t.Errorf("other key: %v", err)
		}
		if _, err := s.Heartbeat(ctx, "nobody", "k1", api.Heartbeat{}, t0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown device: %v", err)
		}
		// A reset lets the device enroll with a new key, using the token once.
		if d, err := s.RequestReset(ctx, "d1", t0); err != nil || d.State != api.StateReset {
			t.Fatalf("reset: %v %+v", err, d)
		}
		if _, err := s.Enroll(ctx, enr("d1", "tok", "k2", t0)); err != nil {
			t.Fatalf("enroll after reset: %v", err)
		}
		if d, _ := s.Device(ctx, "d1"); d.State != api.StateActive || d.KeySHA256 != "k2" {
			t.Errorf("after re-enrollment: %+v", d)
		}
		if n := usesLeft(t, s, "tok"); n != 8 {
			t.Errorf("uses left %d, want 8", n)
		}
		if d, err := s.Label(ctx, "d1", map[string]string{"zone": "eu"}, []string{"own"}, t0); err != nil || d.Labels["zone"] != "eu" || d.Labels["own"] != "" {
			t.Errorf("labels: %v %+v", err, d.Labels)
		}
		if devs, _ := s.Devices(ctx, store.DeviceFilter{Labels: map[string]string{"zone": "eu"}}); len(devs) != 1 {
			t.Errorf("filter by label: %d", len(devs))
		}
		if devs, _ := s.Devices(ctx, store.DeviceFilter{Labels: map[string]string{"zone": "us"}}); len(devs) != 0 {
			t.Errorf("filter by other label: %d", len(devs))
		}
		if _, err := s.Revoke(ctx, "d1", t0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Heartbeat(ctx, "d1", "k2", api.Heartbeat{}, t0); !errors.Is(err, store.ErrRevoked) {
			t.Errorf("revoked heartbeat: %v", err)
		}
		if _, err := s.Enroll(ctx, enr("d1", "tok", "k2", t0)); !errors.Is(err, store.ErrRevoked) {
			t.Errorf("revoked enrollment: %v", err)
		}
		if _, err := s.RequestReset(ctx, "d1", t0); !errors.Is(err, store.ErrRevoked) {
			t.Errorf("reset of a revoked device: %v", err)
		}
		if _, err := s.Revoke(ctx, "nobody", t0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("revoke unknown: %v", err)
		}
		if c, err := s.CountByState(ctx); err != nil || c[api.StateRevoked] != 1 || len(c) != 1 {
			t.Errorf("counts %v %v", c, err)
		}
		evs, _ := s.Events(ctx, "d1", 100)
		var kinds []string
		for _, e := range evs {
			kinds = append(kinds, e.Kind)
		}
		if fmt.Sprint(kinds) != "[revoked labels re-enrolled with a new key after a reset reset enrolled]" {
			t.Errorf("events %q", kinds)
		}
	})
}

// TestConcurrentEnrollment: 30 devices race for 10 uses; one device races with itself.
func TestConcurrentEnrollment(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s store.Store) {
		mkToken(t, s, "ten", 10, time.Hour, nil)
		var wg sync.WaitGroup
		var mu sync.Mutex
		results := map[string]int{}
		for i := range 30 {
			wg.Go(func() {
				id := "dev-" + strconv.Itoa(i%25) // 5 devices try twice at once
				_, err := s.Enroll(ctx, enr(id, "ten", "key-"+id, t0))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					results["ok"]++
				case errors.Is(err, store.ErrUsedUpToken):
					results["used up"]++
				default:
					results[err.Error()]++
				}
			})
		}
		wg.Wait()
		devs, err := s.Devices(ctx, store.DeviceFilter{})
		if err != nil || len(devs) != 10 {
			t.Errorf("%d devices (%v), want 10; results %v", len(devs), err, results)
		}
		if usesLeft(t, s, "ten") != 0 || results["ok"]+results["used up"] != 30 {
			t.Errorf("results %v", results)
		}
	})
}

func TestMigrateTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fleet.db")
	s, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	mkToken(t, s, "x", 1, time.Hour, nil)
	s.Close()
	s, err = store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if toks, _ := s.Tokens(ctx); len(toks) != 1 {
		t.Errorf("tokens after reopening: %d", len(toks))
	}
}

// TestKill9 kills a process writing to SQLite and checks that every write it acknowledged is
// there after reopening the database.
func TestKill9(t *testing.T) {
	if path := os.Getenv("EDGEIMG_STORE_CHILD"); path != "" {
		s, err := store.Open(ctx, path)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		for i := 0; ; i++ {
			secret := "tok-" + strconv.Itoa(i)
			if err := s.CreateToken(ctx, store.Token{ID: secret, Hash: hash(secret), CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), Uses: 1}); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			fmt.Println("ack", i)
		}
	}
	if testing.Short() {
		t.Skip("runs a child process")
	}
	path := filepath.Join(t.TempDir(), "fleet.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$")
	cmd.Env = append(os.Environ(), "EDGEIMG_STORE_CHILD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	acked := -1
	for sc.Scan() && acked < 200 {
		var n int
		if _, err := fmt.Sscanf(sc.Text(), "ack %d", &n); err != nil {
			t.Fatalf("child: %q", sc.Text())
		}
		acked = n
	}
	_ = cmd.Process.Kill() // SIGKILL
	_ = cmd.Wait()
	s, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	toks, err := s.Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, tk := range toks {
		have[tk.ID] = true
	}
	for i := 0; i <= acked; i++ {
		if !have["tok-"+strconv.Itoa(i)] {
			t.Fatalf("acknowledged token %d is lost (%d acknowledged, %d stored)", i, acked+1, len(toks))
		}
	}
	t.Logf("%d acknowledged, %d stored after kill -9", acked+1, len(toks))
}
