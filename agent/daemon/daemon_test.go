package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/identity"
	"github.com/edgeimg/edgeimg/agent/k3s"
	"github.com/edgeimg/edgeimg/agent/k3s/k3stest"
	"github.com/edgeimg/edgeimg/fleet"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/client"
	"github.com/edgeimg/edgeimg/fleet/pki"
	"github.com/edgeimg/edgeimg/fleet/store"
)

// logBuf is a slog handler target safe for concurrent use.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// fleetEnv is a real fleet server (TLS on 127.0.0.1, SQLite in a file) that can be killed and
// started again on the same address and database.
type fleetEnv struct {
	t      *testing.T
	dir    string
	addr   string
	ca     *pki.CA
	tls    func() *httptest.Server
	srv    *httptest.Server
	st     *store.SQL
	admin  *client.Admin
	wrap   func(store.Store) store.Store
	token  string
	caPEM  []byte
	closed bool
	opts   []fleet.Option
}

func newFleet(t *testing.T, opts ...fleet.Option) *fleetEnv {
	t.Helper()
	dir := t.TempDir()
	if err := pki.Init(dir, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := pki.ReadAdminToken(filepath.Join(dir, pki.AdminTokenFile))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fleetEnv{t: t, dir: dir, addr: l.Addr().String(), ca: ca, token: tok, caPEM: ca.CertPEM, opts: opts}
	l.Close()
	f.start()
	t.Cleanup(f.stop)
	f.admin, err = client.NewAdmin("https://"+f.addr, tok, ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fleetEnv) url() string { return "https://" + f.addr }

// start (re)starts the server on the same address and database.
func (f *fleetEnv) start() {
	t := f.t
	st, err := store.Open(context.Background(), filepath.Join(f.dir, "fleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	var s store.Store = st
	if f.wrap != nil {
		s = f.wrap(st)
	}
	h := fleet.NewServer(s, f.ca, append([]fleet.Option{fleet.WithAdminToken(f.token), fleet.WithHeartbeatInterval(0)}, f.opts...)...)
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	var l net.Listener
	for range 50 { // the old socket may linger a moment
		if l, err = net.Listen("tcp", f.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = l
	srv.TLS, err = pki.ServerTLSConfig(f.ca, filepath.Join(f.dir, pki.ServerFile), filepath.Join(f.dir, pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	f.srv, f.st, f.closed = srv, st, false
}

// stop kills the server: open connections are cut, the store closed.
func (f *fleetEnv) stop() {
	if f.closed {
		return
	}
	f.srv.CloseClientConnections()
	f.srv.Close()
	f.st.Close()
	f.closed = true
}

func (f *fleetEnv) newToken(uses int, role *api.Role) string {
	tok, err := f.admin.CreateToken(context.Background(), api.TokenCreateRequest{TTLSeconds: 3600, Uses: uses, Labels: map[string]string{"site": "berlin"}, Role: role})
	if err != nil {
		f.t.Fatal(err)
	}
	return tok.Token
}

// newDevice lays out a device: the image's fleet settings and CA, a device tree serial, and a
// config partition with device.yaml.
func newDevice(t *testing.T, f *fleetEnv, token string) (device.Paths, string) {
	t.Helper()
	p := device.Paths{Root: t.TempDir()}
	card := t.TempDir()
	files := map[string]string{
		p.Path(device.FleetConfig):                   fmt.Sprintf(`{"url": %q, "heartbeat_seconds": 30}`, f.url()),
		p.Path(device.FleetCA):                       string(f.caPEM),
		p.Path(device.DeviceTreeSerial):              "10000000c0ffee42\x00",
		p.Path(device.MemInfo):                       "MemTotal: 4000000 kB\nMemAvailable: 3000000 kB\n",
		p.Path(device.Uptime):                        "100.5 200.0\n",
		p.Path(device.K3sInfo):                       `{"version": "v1.31.4+k3s1"}`,
		filepath.Join(card, device.SettingsOnConfig): "token: " + token + "\nhostname: truck-42\nlabels:\n  truck: \"42\"\nwifi:\n  ssid: depot\n  psk: secretpass\n",
		p.Path("var/lib/rancher/k3s/agent/images/k3s-airgap-images-arm64.tar.zst"): "shipped",
	}
	for path, data := range files {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return p, card
}

func testConfig(p device.Paths, card string, r k3s.Runner, logs io.Writer) Config {
	return Config{Paths: p, ConfigDir: card, Version: "v1.2.3", Slot: "a", Runner: r, Heartbeat: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(logs, nil)), MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, FirstAttempt: 2 * time.Second}
}

// runAgent runs the agent until the returned stop is called; stop returns Run's error.
func runAgent(cfg Config) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	return func() error { cancel(); return <-done }
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func (f *fleetEnv) device(id string) *api.DeviceDetail {
	d, err := f.admin.Device(context.Background(), id)
	if err != nil {
		return nil
	}
	return d
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const id = "10000000c0ffee42"

func TestEnrollAndHeartbeat(t *testing.T) {
	f := newFleet(t)
	p, card := newDevice(t, f, f.newToken(1, nil))
	r := &k3stest.Recorder{}
	var logs logBuf
	stop := runAgent(testConfig(p, card, r, &logs))
	waitFor(t, "three heartbeats", func() bool { d := f.device(id); return d != nil && len(d.Heartbeats) >= 3 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	d := f.device(id)
	hb := d.Device.LastHeartbeat
	if d.Device.Hostname != "truck-42" || d.Device.Labels["truck"] != "42" || d.Device.Labels["site"] != "berlin" || d.Device.Version != "v1.2.3" ||
		hb.Role != "server" || hb.MemTotal != 4000000*1024 || hb.UptimeSeconds != 100 || hb.DiskTotal == 0 || len(hb.LastErrors) != 0 {
		t.Errorf("device %+v, heartbeat %+v", d.Device, hb)
	}
	cfg := read(t, p.Path(device.K3sRoleConfig))
	for _, want := range []string{`node-name: "truck-42"`, `write-kubeconfig: "/var/lib/rancher/k3s/k3s.yaml"`, `node-label:` + "\n" + `  - "site=berlin"`} {
		if !strings.Contains(cfg, want) && !strings.Contains(cfg, strings.ReplaceAll(want, "site=berlin", "truck=42")) {
			t.Errorf("K3s config has no %q:\n%s", want, cfg)
		}
	}
	if calls := r.Calls(); !slices.Equal(calls, []string{"rfkill unblock wifi", "nmcli connection reload", "systemctl disable --now k3s-agent.service", "systemctl start k3s.service"}) {
		t.Errorf("runner calls %q", calls)
	}
	if card := read(t, filepath.Join(card, device.SettingsOnConfig)); strings.Contains(card, "edg_") || strings.Contains(card, "secretpass") {
		t.Errorf("secrets left on the card:\n%s", card)
	}
	if _, err := os.Stat(p.Path(device.NMConnections + "/" + device.WiFiConnection)); err != nil {
		t.Error(err)
	}
	// A restart carries on: no new enrollment, the same role, heartbeats go on.
	before := len(f.device(id).Events)
	stop = runAgent(testConfig(p, card, r, &logs))
	n := len(f.device(id).Heartbeats)
	waitFor(t, "heartbeats after a restart", func() bool { return len(f.device(id).Heartbeats) > n })
	stop()
	if after := len(f.device(id).Events); after != before {
		t.Errorf("a restart added %d events", after-before)
	}
	// Revocation: the next heartbeats are refused at once.
	if _, err := f.admin.Revoke(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	stop = runAgent(testConfig(p, card, r, &logs))
	waitFor(t, "a refused heartbeat", func() bool { return strings.Contains(logs.String(), "403 revoked") })
	stop()
}

// TestOfflineFirst: the fleet is down at first boot; K3s starts standalone at once and the
// agent enrolls when the fleet comes up. The fleet assigns the agent role, but K3s has state
// by then: the change is refused and reported until the fleet orders a reset.
func TestOfflineFirst(t *testing.T) {
	f := newFleet(t)
	tok := f.newToken(1, &api.Role{Kind: api.RoleAgent, ServerURL: "https://10.9.8.7:6443", Token: "K10join"})
	f.stop()
	p, card := newDevice(t, f, tok)
	r := &k3stest.Recorder{}
	var logs logBuf
	cfg := testConfig(p, card, r, &logs)
	cfg.FirstAttempt = 100 * time.Millisecond
	stop := runAgent(cfg)
	waitFor(t, "standalone K3s", func() bool { return slices.Contains(r.Calls(), "systemctl start k3s.service") })
	if a, _ := k3s.LoadApplied(p); a == nil || !a.Provisional || a.Role.Kind != api.RoleServer {
		t.Errorf("applied %+v", a)
	}
	// K3s runs and has state before the fleet is reachable.
	os.MkdirAll(p.Path("var/lib/rancher/k3s/server/db"), 0o755)
	os.MkdirAll(p.Path("var/lib/rancher/k3s/server/manifests"), 0o755)
	os.WriteFile(p.Path("var/lib/rancher/k3s/server/manifests/app.yaml"), []byte("shipped"), 0o644)
	f.start()
	waitFor(t, "the refusal in a heartbeat", func() bool {
		d := f.device(id)
		return d != nil && d.Device.LastHeartbeat != nil && slices.ContainsFunc(d.Device.LastHeartbeat.LastErrors, func(s string) bool { return strings.Contains(s, "role change refused") })
	})
	d := f.device(id)
	if msg := strings.Join(d.Device.LastHeartbeat.LastErrors, "\n"); !strings.Contains(msg, "this node is a K3s server and K3s has state") || !strings.Contains(msg, "agent of https://10.9.8.7:6443") {
		t.Errorf("refusal: %s", msg)
	}
	if cfg := read(t, p.Path(device.K3sRoleConfig)); !strings.Contains(cfg, "write-kubeconfig") {
		t.Errorf("the role config changed:\n%s", cfg)
	}
	// The fleet orders a reset: K3s state goes (not what the image ships), the agent role applies.
	if _, err := f.admin.Reset(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent role", func() bool {
		a, _ := k3s.LoadApplied(p)
		return a != nil && a.Role.Kind == api.RoleAgent
	})
	waitFor(t, "the device active again", func() bool { d := f.device(id); return d != nil && d.Device.State == api.StateActive })
	stop()
	cfgText := read(t, p.Path(device.K3sRoleConfig))
	if !strings.Contains(cfgText, `server: "https://10.9.8.7:6443"`) || !strings.Contains(cfgText, `token: "K10join"`) {
		t.Errorf("agent config:\n%s", cfgText)
	}
	if _, err := os.Stat(p.Path("var/lib/rancher/k3s/server/db")); err == nil {
		t.Error("K3s state survived the reset")
	}
	for _, kept := range []string{"var/lib/rancher/k3s/server/manifests/app.yaml", "var/lib/rancher/k3s/agent/images/k3s-airgap-images-arm64.tar.zst", device.SettingsFile} {
		if _, err := os.Stat(p.Path(kept)); err != nil {
			t.Errorf("the reset removed %s", kept)
		}
	}
	calls := strings.Join(r.Calls(), "\n")
	for _, want := range []string{"systemctl stop k3s.service k3s-agent.service", "systemctl disable --now k3s.service", "systemctl start k3s-agent.service"} {
		if !strings.Contains(calls, want) {
			t.Errorf("runner calls have no %q:\n%s", want, calls)
		}
	}
	evs := f.device(id).Events
	if len(evs) < 3 || evs[0].Kind != "re-enrolled with its certificate" || evs[1].Kind != "reset" || evs[len(evs)-1].Kind != "enrolled" {
		t.Errorf("events %+v", evs)
	}
}

// abortingStore commits an enrollment and then cuts the connection, as a server killed
// between its commit and its answer.
type abortingStore struct {
	store.Store
	aborts *int
}

func (s abortingStore) Enroll(ctx context.Context, e store.Enrollment) (api.Device, error) {
	d, err := s.Store.Enroll(ctx, e)
	if err == nil && *s.aborts > 0 {
		*s.aborts--
		panic(http.ErrAbortHandler)
	}
	return d, err
}

// TestKillMidEnrollment kills both sides mid-enrollment: the server after committing and
// before answering, then the agent after receiving its certificate and before writing it, then
// the server is restarted on the same database. Nothing is lost or duplicated: one device,
// one token use, the same ID.
func TestKillMidEnrollment(t *testing.T) {
	f := newFleet(t)
	tok := f.newToken(1, nil)
	aborts := 1
	f.stop()
	f.wrap = func(s store.Store) store.Store { return abortingStore{Store: s, aborts: &aborts} }
	f.start()
	p, card := newDevice(t, f, tok)
	r := &k3stest.Recorder{}
	var logs logBuf
	cfg := testConfig(p, card, r, &logs)
	crashes := 1
	cfg.afterEnrollAnswer = func() error {
		if crashes > 0 {
			crashes--
			return errors.New("crash")
		}
		return nil
	}
	// Attempt 1: the server commits and dies before answering; attempt 2: the agent gets the
	// answer and dies before writing anything.
	if err := Run(context.Background(), cfg); !errors.Is(err, errCrash) {
		t.Fatalf("first run: %v\n%s", err, logs.String())
	}
	if aborts != 0 {
		t.Fatal("the server did not abort")
	}
	if c, _, _ := identity.Certificate(p, mustKey(t, p)); c != nil {
		t.Error("a certificate was written before the crash")
	}
	// The server restarts on the same database; the agent starts again.
	f.stop()
	f.wrap = nil
	f.start()
	stop := runAgent(cfg)
	waitFor(t, "a heartbeat", func() bool { d := f.device(id); return d != nil && len(d.Heartbeats) > 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	devs, _ := f.admin.Devices(context.Background(), "", nil)
	toks, _ := f.admin.Tokens(context.Background())
	if len(devs) != 1 || devs[0].ID != id || toks[0].UsesLeft != 0 {
		t.Errorf("devices %+v, tokens %+v", devs, toks)
	}
	var kinds []string
	for _, e := range f.device(id).Events {
		kinds = append(kinds, e.Kind)
	}
	if len(kinds) < 2 || kinds[len(kinds)-1] != "enrolled" || slices.Index(kinds, "enrolled") != len(kinds)-1 {
		t.Errorf("events %q", kinds)
	}
	if e, _ := identity.LoadEnrollment(p); e == nil || e.DeviceID != id {
		t.Errorf("enrollment %+v", e)
	}
}

func mustKey(t *testing.T, p device.Paths) []byte {
	k, err := identity.Key(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestClockBehind: a device whose clock is before the server certificate's start says so and
// waits; the build-epoch floor (/usr/lib/clock-epoch) puts the clock right without skipping
// verification.
func TestClockBehind(t *testing.T) {
	f := newFleet(t)
	p, card := newDevice(t, f, f.newToken(1, nil))
	r := &k3stest.Recorder{}
	var logs logBuf
	cfg := testConfig(p, card, r, &logs)
	cfg.Now = func() time.Time { return time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC) } // a Pi booted without network
	cfg.FirstAttempt = 500 * time.Millisecond
	stop := runAgent(cfg)
	waitFor(t, "the clock message", func() bool { return strings.Contains(logs.String(), "the clock is behind") })
	stop()
	if d := f.device(id); d != nil {
		t.Fatal("enrolled with a clock in the past")
	}
	if !slices.Contains(r.Calls(), "systemctl start k3s.service") {
		t.Error("K3s did not start standalone")
	}
	// The image's build epoch, after the fleet's CA was made.
	os.MkdirAll(filepath.Dir(p.Path(device.ClockEpoch)), 0o755)
	os.WriteFile(p.Path(device.ClockEpoch), nil, 0o644)
	os.Chtimes(p.Path(device.ClockEpoch), time.Now(), time.Now())
	stop = runAgent(cfg)
	waitFor(t, "enrollment", func() bool { return f.device(id) != nil })
	stop()
}

func TestNoToken(t *testing.T) {
	f := newFleet(t)
	p, card := newDevice(t, f, "")
	os.WriteFile(filepath.Join(card, device.SettingsOnConfig), []byte("hostname: truck-42\n"), 0o644)
	var logs logBuf
	stop := runAgent(testConfig(p, card, &k3stest.Recorder{}, &logs))
	waitFor(t, "the message", func() bool {
		return strings.Contains(logs.String(), "no enrollment token: write one into edgeimg/device.yaml")
	})
	stop()
}
