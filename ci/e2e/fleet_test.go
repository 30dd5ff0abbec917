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
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/client"
	"github.com/edgeimg/edgeimg/fleet/pki"
	"github.com/edgeimg/edgeimg/fleet/store"
	"github.com/edgeimg/edgeimg/ota/bundle"
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
	// env points the edgeimg CLI at this fleet as an operator's shell would:
	// EDGEIMG_FLEET_URL, EDGEIMG_ADMIN_TOKEN, EDGEIMG_FLEET_CA.
	env     []string
	edgeimg string // the edgeimg binary
	srv     *http.Server
	st      io.Closer
	log     *os.File
}

// startFleet makes the fleet's CA and server certificate (SAN 10.0.2.2), reserves a port on
// 127.0.0.1 (the listener is kept and served: nothing else can take the port before the
// image that names it boots) and serves the fleet API on it until the test ends, with its
// releases in fleet/releases, accepting bundles signed by the OTA key otaPub, and advancing
// its rollouts.
func (h *harness) startFleet(otaPub string) *fleetServer {
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
	pubPEM, err := os.ReadFile(otaPub)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := bundle.ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatalf("%s: %v", otaPub, err)
	}
	handler := fleet.NewServer(st, ca, fleet.WithAdminToken(adminToken), fleet.WithLogger(log),
		fleet.WithHeartbeatInterval(fleetHeartbeat), fleet.WithReleaseDir(filepath.Join(dir, "releases")),
		fleet.WithTrustedKeys(bundle.NewKeyring(pub)))
	rctx, stopRollouts := context.WithCancel(ctx)
	rolloutsDone := make(chan struct{})
	go func() {
		defer close(rolloutsDone)
		handler.RunRollouts(rctx)
	}()
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
		admin: admin, srv: srv, st: st, log: logf, edgeimg: h.edgeimg,
		env: []string{"EDGEIMG_FLEET_URL=" + fmt.Sprintf("https://127.0.0.1:%d", port), "EDGEIMG_ADMIN_TOKEN=" + adminToken,
			"EDGEIMG_FLEET_CA=" + filepath.Join(dir, pki.CAFile)}}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		stopRollouts()
		<-rolloutsDone
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

// fleetWant is what checkFleet expects of the device: its ID (empty on the first boot) and
// the release version and slot it reports.
type fleetWant struct {
	id, version, slot string
}

// checkFleet checks that exactly one device, e2e-node, is enrolled, and that it sent heartbeats
// with its version and slot during this boot (after QEMU started). It returns the device's ID.
func (f *fleetServer) checkFleet(t *testing.T, con *console, want fleetWant) string {
	t.Helper()
	wantID := want.id
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
		// The release version of the slot it runs (the spec's version:), which updates compare.
		if d.Version != want.version {
			con.fail(t, "the device reports version %q, want the booted release's version %q", d.Version, want.version)
		}
		if d.Slot != want.slot {
			con.fail(t, "the device reports slot %q, the harness booted slot %s", d.Slot, want.slot)
		}
	})
	return id
}

// cli runs `edgeimg ARGS…` against this fleet, as an operator would, and returns its output.
func (f *fleetServer) cli(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, f.edgeimg, args...)
	cmd.Env = append(os.Environ(), f.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("edgeimg %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// pushRelease uploads an update bundle (NAME-BOARD.update) to the fleet with `edgeimg release
// push` and checks that the fleet stores it as release version.
func (f *fleetServer) pushRelease(t *testing.T, path, version string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := f.cli(ctx, "release", "push", path)
	if err != nil {
		t.Fatalf("pushing %s to the fleet: %v (server log: %s)", path, err, f.log.Name())
	}
	t.Logf("edgeimg release push %s: %s", filepath.Base(path), strings.TrimSpace(out))
	rel, err := f.admin.Release(ctx, version)
	if err != nil {
		t.Fatalf("the fleet after the push of %s: %v", path, err)
	}
	t.Logf("release %s: %d bytes, %d chunks, %d new chunk bytes", rel.Version, rel.Size, rel.Chunks, rel.NewBytes)
}

// rollout starts rolling release version out to every device in one wave, one failure
// halting it: `edgeimg release rollout VERSION --waves 100% --max-failures 0%`.
func (f *fleetServer) rollout(ctx context.Context, version string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := f.cli(ctx, "release", "rollout", version, "--waves", "100%", "--max-failures", "0%")
	return err
}

// theDevice returns the fleet's only device with its details; an error when there is not
// exactly one.
func (f *fleetServer) theDevice(ctx context.Context) (*api.DeviceDetail, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	devs, err := f.admin.Devices(ctx, "", nil)
	if err != nil {
		return nil, err
	}
	if len(devs) != 1 {
		return nil, fmt.Errorf("the fleet has %d devices, want 1", len(devs))
	}
	return f.admin.Device(ctx, devs[0].ID)
}

// updateOf returns the update status the device last reported, nil without one.
func updateOf(d *api.DeviceDetail) *api.UpdateStatus {
	if d == nil || d.Device.LastHeartbeat == nil {
		return nil
	}
	return d.Device.LastHeartbeat.Update
}

// awaitUpdate polls the fleet (every 2 s) until the device reports an update of version in
// one of the states, or a final state of it (committed, failed, refused) that is not among
// them (an error), or ctx ends. It returns the device as last seen.
func (f *fleetServer) awaitUpdate(ctx context.Context, version string, states ...string) (*api.DeviceDetail, error) {
	var last *api.DeviceDetail
	for {
		d, err := f.theDevice(ctx)
		if err == nil {
			last = d
			if u := updateOf(d); u != nil && u.Version == version {
				if slices.Contains(states, u.State) {
					return d, nil
				}
				switch u.State {
				case api.UpdateCommitted, api.UpdateFailed, api.UpdateRefused:
					return d, fmt.Errorf("the device reports the update to %s %s (%s: %s), not %s", version, u.State, u.Reason, u.Detail, strings.Join(states, " or "))
				}
			}
		}
		select {
		case <-ctx.Done():
			u := updateOf(last)
			return last, fmt.Errorf("waiting for the device to report the update to %s %s: %w (last update status %+v, last error %v)", version, strings.Join(states, " or "), ctx.Err(), u, err)
		case <-time.After(2 * time.Second):
		}
	}
}

// awaitRollout polls (every 2 s) the rollout of version until it is in state, or ctx ends.
func (f *fleetServer) awaitRollout(ctx context.Context, version, state string) (*api.RolloutStatus, error) {
	var last *api.RolloutStatus
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		st, err := f.admin.RolloutStatus(rctx, version)
		cancel()
		if err == nil {
			last = st
			if st.State == state {
				return st, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("waiting for the rollout of %s to be %s: %w (last %+v, error %v)", version, state, ctx.Err(), last, err)
		case <-time.After(2 * time.Second):
		}
	}
}

// heartbeatsSince counts the device's stored heartbeats after t.
func heartbeatsSince(d *api.DeviceDetail, t time.Time) int {
	n := 0
	for _, hb := range d.Heartbeats {
		if hb.At.After(t) {
			n++
		}
	}
	return n
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

// runOut runs a short command (bounded by outputTimeout) and returns its standard output.
func runOut(name string, args ...string) (string, error) {
	var stderr strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), outputTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
