package cli

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/fleet/loadtest"
)

// TestFleetLoadtest runs a small load test against a server in the process.
func TestFleetLoadtest(t *testing.T) {
	out, errOut, err := runCLI(context.Background(), "fleet", "loadtest", "--devices", "20", "--rate", "40", "--spike", "2", "--duration", "1s", "--spike-duration", "1s", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	var rep loadtest.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rep.Devices != 20 || len(rep.Phases) != 3 || rep.Phases[0].OK != 20 || rep.Phases[1].Requests != 40 || rep.Phases[2].Requests != 80 ||
		rep.Phases[1].Errors != nil || rep.Phases[2].Errors != nil {
		t.Errorf("report: %s", out)
	}
	if !strings.Contains(errOut, "fleet server in this process") {
		t.Errorf("stderr: %s", errOut)
	}
	for _, args := range [][]string{{"--server", "https://fleet.example.com:8443", "--admin-token", "x"}, {"--devices", "0"}, {"--db", "/tmp/x.db"}} {
		if _, _, err := runCLI(context.Background(), append([]string{"fleet", "loadtest"}, args...)...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// TestFleetDashboardLink prints a login link.
func TestFleetDashboardLink(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := loadtest.StartLocal(ctx, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("EDGEIMG_ADMIN_TOKEN", l.AdminToken)
	caFile := t.TempDir() + "/ca.pem"
	if err := os.WriteFile(caFile, l.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := runCLI(ctx, "fleet", "dashboard", "--server", l.URL, "--ca", caFile)
	if err != nil || !strings.HasPrefix(out, l.URL+"/login/link?t=") || !strings.Contains(errOut, "it works once") {
		t.Errorf("fleet dashboard: %v %q %q", err, out, errOut)
	}
}
