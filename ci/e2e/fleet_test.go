//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/client"
	"github.com/edgeimg/edgeimg/fleet/pki"
	"github.com/edgeimg/edgeimg/fleet/store"
)

// guestHost is the host as QEMU's user network shows it to the guest.
const guestHost = "10.0.2.2"

// fleetHeartbeat is the heartbeat interval of the test image and the fleet server.
const fleetHeartbeat = 5 * time.Second

// fleetServer is a real fleet server on the host's loopback, reached by the guest at
// https://10.0.2.2:PORT (in its certificate) and by the harness at https://127.0.0.1:PORT.
type fleetServer struct {
	dir    string
	caFile string // the fleet CA the image trusts
	url    string // as the guest sees it
	admin  *client.Admin
	srv    *http.Server
	st     io.Closer
	log    *os.File
}

// startFleet makes the fleet's CA and server certificate (SAN 10.0.2.2), reserves a port on
// 127.0.0.1 (the listener is kept and served: nothing else can take the port before the
// image that names it boots) and serves the fleet API on it until the test ends.
func (h *harness) startFleet() *fleetServer {
	t := h.t
	t.Helper()
	dir := filepath.Join(h.work, "fleet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := pki.Init(dir, []string{guestHost}, time.Now()); err != nil {
		t.Fatalf("fleet pki: %v", err)
	}
	ca, err := pki.LoadCA(filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := pki.ServerTLSConfig(ca, filepath.Join(dir, pki.ServerFile), filepath.Join(dir, pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	adminToken, err := pki.ReadAdminToken(filepath.Join(dir, pki.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "fleet.db"))
	if err != nil {
		t.Fatalf("fleet store: %v", err)
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(logf, nil))
	handler := fleet.NewServer(st, ca, fleet.WithAdminToken(adminToken), fleet.WithLogger(log),
		fleet.WithHeartbeatInterval(fleetHeartbeat))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: handler, TLSConfig: tlsConf, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go func() {
		if err := srv.Serve(tls.NewListener(l, tlsConf)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("serving", "err", err)
		}
	}()
	caPEM, err := os.ReadFile(filepath.Join(dir, pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.NewAdmin(fmt.Sprintf("https://127.0.0.1:%d", port), adminToken, caPEM)
	if err != nil {
		t.Fatal(err)
	}
	f := &fleetServer{dir: dir, caFile: filepath.Join(dir, pki.CAFile), url: fmt.Sprintf("https://%s:%d", guestHost, port),
		admin: admin, srv: srv, st: st, log: logf}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = st.Close()
		_ = logf.Close()
	})
	t.Logf("fleet server on 127.0.0.1:%d, the guest's %s; its log: %s", port, f.url, logf.Name())
	return f
}

// token creates a one-use enrollment token.
func (f *fleetServer) token(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := f.admin.CreateToken(ctx, api.TokenCreateRequest{TTLSeconds: 3600, Uses: 1, Labels: map[string]string{"e2e": "yes"}})
	if err != nil {
		t.Fatalf("creating an enrollment token: %v", err)
	}
	return tok.Token
}

// devices lists the fleet's devices with their details.
func (f *fleetServer) devices(t *testing.T) []*api.DeviceDetail {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	devs, err := f.admin.Devices(ctx, "", nil)
	if err != nil {
		t.Fatalf("listing the fleet's devices: %v", err)
	}
	var out []*api.DeviceDetail
	for _, d := range devs {
		dd, err := f.admin.Device(ctx, d.ID)
		if err != nil {
			t.Fatalf("showing device %s: %v", d.ID, err)
		}
		out = append(out, dd)
	}
	return out
}

// checkFleet checks that exactly one device, e2e-node, is enrolled, and that it sent heartbeats
// with its version and slot during this boot (after QEMU started). It returns the device's ID.
func (f *fleetServer) checkFleet(t *testing.T, con *console, wantID string) string {
	t.Helper()
	devs := f.devices(t)
	var id string
	t.Run("agent enrolled with the fleet", func(t *testing.T) {
		if len(devs) != 1 {
			con.fail(t, "the fleet has %d devices, want 1 (server log: %s)", len(devs), f.log.Name())
			return
		}
		d := devs[0].Device
		id = d.ID
		t.Logf("device %s hostname %q state %s enrolled %s", d.ID, d.Hostname, d.State, d.EnrolledAt.Format(time.RFC3339))
		if d.Hostname != hostname {
			con.fail(t, "the enrolled device's hostname is %q, want %q", d.Hostname, hostname)
		}
		if wantID != "" && d.ID != wantID {
			con.fail(t, "the device is %s now, %s on the first boot: it enrolled again", d.ID, wantID)
		}
	})
	t.Run("heartbeats arrive", func(t *testing.T) {
		if len(devs) != 1 {
			t.Skip("no single device")
		}
		dd := devs[0]
		var n int
		for _, hb := range dd.Heartbeats {
			if hb.At.After(con.start) {
				n++
			}
		}
		d := dd.Device
		t.Logf("%d heartbeats this boot (%d kept); last seen %s; version %q slot %q", n, len(dd.Heartbeats), d.LastSeen.Format(time.RFC3339), d.Version, d.Slot)
		if n < 2 {
			con.fail(t, "%d heartbeats arrived during this boot, want 2 or more", n)
		}
		if !d.LastSeen.After(con.start) {
			con.fail(t, "the device was last seen %s, before this boot started (%s)", d.LastSeen, con.start)
		}
		// The image's release version (spec version: "1"), which updates compare.
		if d.Version != "1" || d.Slot == "" {
			con.fail(t, "the device reports version %q (want the image's release version \"1\") and slot %q", d.Version, d.Slot)
		}
		// The harness boots system A.
		if d.Slot != "" && d.Slot != "a" {
			con.fail(t, "the device reports slot %q, the harness booted slot a", d.Slot)
		}
	})
	return id
}

// checkSettingsConsumed checks that the agent removed the enrollment token from device.yaml on
// the config partition.
func (h *harness) checkSettingsConsumed(t *testing.T, con *console, img string, config partition, token string) {
	t.Helper()
	cmd := fmt.Sprintf("mtype -i %s@@%d ::/edgeimg/device.yaml", img, config.Start)
	out, err := runOut("mtype", "-i", fmt.Sprintf("%s@@%d", img, config.Start), "::/edgeimg/device.yaml")
	if err != nil {
		// A removed file is consumed too.
		if _, lerr := runOut("mdir", "-i", fmt.Sprintf("%s@@%d", img, config.Start), "::/edgeimg"); lerr != nil {
			con.fail(t, "%s: %v; and no ::/edgeimg directory: %v", cmd, err, lerr)
		}
		t.Logf("%s: %v (removed)", cmd, err)
		return
	}
	t.Logf("device.yaml after the boot:\n%s", out)
	if strings.Contains(out, token) {
		con.fail(t, "device.yaml on the config partition still holds the enrollment token after the boot")
	}
}

func runOut(name string, args ...string) (string, error) {
	var stderr strings.Builder
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
