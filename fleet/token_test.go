package fleet_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/client"
	"github.com/edgeimg/edgeimg/fleet/store"
	"github.com/edgeimg/edgeimg/fleet/store/storetest"
)

// TestRevokeTokenRoute: POST /v1/admin/tokens/{id}/revoke refuses new enrollments with the
// token (401 revoked_token, counted in the metrics) while the device enrolled with it keeps
// its heartbeats; it is idempotent, and an unknown ID is a 404 that says so.
func TestRevokeTokenRoute(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		tok := token(t, e, 5, time.Hour, nil)
		toks, err := e.admin.Tokens(ctx)
		if err != nil || len(toks) != 1 {
			t.Fatalf("tokens: %+v %v", toks, err)
		}
		id := toks[0].ID
		d := e.newDev("10000000c0ffee01")
		if status, apiErr, _ := d.enroll(t, tok); status != 200 {
			t.Fatalf("enroll: %d %+v", status, apiErr)
		}
		e.clock.add(time.Minute)
		info, err := e.admin.RevokeToken(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if info.ID != id || !info.RevokedAt.Equal(e.clock.now()) || info.UsesLeft != 4 {
			t.Errorf("revoked token: %+v (now %v)", info, e.clock.now())
		}
		e.clock.add(time.Minute)
		if again, err := e.admin.RevokeToken(ctx, id); err != nil || !again.RevokedAt.Equal(info.RevokedAt) {
			t.Errorf("revoking again: %+v %v", again, err)
		}
		var ce *client.Error
		if _, err := e.admin.RevokeToken(ctx, "0123456789ab"); !errors.As(err, &ce) || ce.Status != 404 || ce.Code != "not_found" || !strings.Contains(ce.Reason, `no enrollment token with ID "0123456789ab"`) {
			t.Errorf("unknown token: %v", err)
		}

		d2 := e.newDev("10000000c0ffee02")
		if status, apiErr, _ := d2.enroll(t, tok); status != 401 || apiErr.Code != "revoked_token" || !strings.Contains(apiErr.Error, "token "+id+" was revoked") {
			t.Errorf("enrollment with a revoked token: %d %+v", status, apiErr)
		}
		if status, apiErr, _ := d.heartbeat(t, d.client(true)); status != 200 {
			t.Errorf("heartbeat of the device enrolled before: %d %+v", status, apiErr)
		}
		toks, _ = e.admin.Tokens(ctx)
		if len(toks) != 1 || !toks[0].RevokedAt.Equal(info.RevokedAt) {
			t.Errorf("token list: %+v", toks)
		}
		metrics := get(t, http.DefaultClient, e.srv, "/metrics")
		if want := `edgeimg_fleet_enrollments_total{result="revoked_token"} 1`; !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics has no %q", want)
		}
		// The admin token is needed.
		bad, _ := client.NewAdmin(e.srv.URL, "wrong", e.ca.CertPEM)
		if _, err := bad.RevokeToken(ctx, id); !errors.As(err, &ce) || ce.Status != 401 {
			t.Errorf("without the admin token: %v", err)
		}
	})
}
