package loadtest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/loadtest"
	"github.com/edgeimg/edgeimg/fleet/store/storetest"
)

func TestRunSmall(t *testing.T) {
	for _, backend := range storetest.Backends {
		t.Run(backend, func(t *testing.T) {
			db := ""
			if backend == "postgres" {
				db = storetest.PostgresURL(t)
			}
			ctx := context.Background()
			l, err := loadtest.StartLocal(ctx, t.TempDir(), db)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			rep, err := loadtest.Run(ctx, loadtest.Config{Server: l.URL, CAPEM: l.CAPEM, AdminToken: l.AdminToken,
				Devices: 50, Rate: 100, Spike: 3, Duration: time.Second, SpikeDuration: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Phases) != 3 {
				t.Fatalf("phases: %+v", rep.Phases)
			}
			enroll, steady, spike := rep.Phases[0], rep.Phases[1], rep.Phases[2]
			if enroll.OK != 50 || enroll.Errors != nil {
				t.Errorf("enroll: %s", enroll)
			}
			// 100/s for 1 s and 300/s for 1 s, give or take the edges of the schedule.
			if steady.Requests < 90 || steady.Requests > 110 || steady.Errors != nil || spike.Requests < 270 || spike.Requests > 330 || spike.Errors != nil {
				t.Errorf("heartbeats:\n%s\n%s", steady, spike)
			}
			if steady.P99 <= 0 || steady.P50 > steady.P99 || spike.ServerRSS == 0 || spike.ServerHeap == 0 {
				t.Errorf("figures: %s", spike)
			}
		})
	}
}

func TestRefusesRemoteServers(t *testing.T) {
	for _, u := range []string{"https://fleet.example.com:8443", "http://127.0.0.1:1", "https://10.0.0.1:8443"} {
		_, err := loadtest.Run(context.Background(), loadtest.Config{Server: u, AdminToken: "x", CAPEM: []byte("x")})
		if err == nil || !strings.Contains(err.Error(), "server") {
			t.Errorf("%s: %v", u, err)
		}
	}
	_, err := loadtest.Run(context.Background(), loadtest.Config{Server: "https://127.0.0.1:1", AdminToken: "x", Devices: loadtest.MaxDevices + 1})
	if err == nil || !strings.Contains(err.Error(), "devices") {
		t.Errorf("too many devices: %v", err)
	}
}
