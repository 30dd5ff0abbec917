package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/store"
	"github.com/edgeimg/edgeimg/fleet/store/storetest"
)

// TestRevokeToken: a revoked token enrolls no new device (ErrRevokedToken, nothing used);
// the device enrolled with it before keeps working; revoking again keeps the first time; an
// unknown ID is ErrNotFound.
func TestRevokeToken(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s store.Store) {
		mkToken(t, s, "tok", 5, time.Hour, nil)
		mkToken(t, s, "other", 5, time.Hour, nil)
		id := hash("tok")[:12]
		if _, err := s.Enroll(ctx, enr("d1", "tok", "k1", t0)); err != nil {
			t.Fatal(err)
		}
		info, err := s.RevokeToken(ctx, id, t0.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if info.ID != id || !info.RevokedAt.Equal(t0.Add(time.Minute)) || info.UsesLeft != 4 {
			t.Errorf("revoked token: %+v", info)
		}
		again, err := s.RevokeToken(ctx, id, t0.Add(time.Hour))
		if err != nil || !again.RevokedAt.Equal(t0.Add(time.Minute)) {
			t.Errorf("revoking again: %+v %v", again, err)
		}
		if _, err := s.RevokeToken(ctx, "nonexistent0", t0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown token: %v", err)
		}
		_, err = s.Enroll(ctx, enr("d2", "tok", "k2", t0.Add(2*time.Minute)))
		if !errors.Is(err, store.ErrRevokedToken) {
			t.Errorf("enrollment with a revoked token: %v", err)
		}
		if _, err := s.Device(ctx, "d2"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a device was stored: %v", err)
		}
		if n := usesLeft(t, s, "tok"); n != 4 {
			t.Errorf("the refusal used the token: %d left", n)
		}
		// The device enrolled before keeps working.
		if _, err := s.Heartbeat(ctx, "d1", "k1", api.Heartbeat{Version: "v1"}, t0.Add(3*time.Minute)); err != nil {
			t.Errorf("heartbeat of a device enrolled with the revoked token: %v", err)
		}
		if _, err := s.Enroll(ctx, store.Enrollment{DeviceID: "d1", ByCert: true, KeySHA256: "k1", At: t0.Add(4 * time.Minute)}); err != nil {
			t.Errorf("re-enrollment by certificate: %v", err)
		}
		// Other tokens are not affected, and the list shows which is revoked.
		if _, err := s.Enroll(ctx, enr("d3", "other", "k3", t0.Add(time.Minute))); err != nil {
			t.Errorf("another token: %v", err)
		}
		toks, err := s.Tokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range toks {
			if revoked := !tk.RevokedAt.IsZero(); revoked != (tk.ID == id) {
				t.Errorf("token %s: revoked at %v", tk.ID, tk.RevokedAt)
			}
		}
	})
}
