package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/edgeimg/edgeimg/agent/fleetclient"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// writeTestBundle writes a bundle of version signed with the key at keyFile to dir.
func writeTestBundle(t *testing.T, dir, keyFile, version string, system []byte) string {
	t.Helper()
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := bundle.ParsePrivateKey(kb)
	if err != nil {
		t.Fatal(err)
	}
	part := func(n string, b []byte) bundle.Source {
		return bundle.Source{Name: n, Size: int64(len(b)), Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
	}
	var buf bytes.Buffer
	m := bundle.Manifest{Name: "gw", Version: version, Board: "rpi4", LayoutVersion: 1, MinVersion: "0"}
	if _, err := bundle.Write(&buf, m, sk, []bundle.Source{part(bundle.PartBoot, []byte("boot "+version)), part(bundle.PartSystem, system)}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "gw-rpi4-"+version+".update")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// pseudo returns n deterministic bytes that do not repeat (so they chunk into many chunks).
func pseudo(seed uint64, n int) []byte {
	b := make([]byte, n)
	x := seed*0x9e3779b97f4a7c15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// TestReleaseCommands pushes bundles to a fleet server run in the process and drives a
// rollout with the release commands.
func TestReleaseCommands(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	for _, k := range []string{"ota", "other"} {
		if _, _, err := runCLI(ctx, "keys", "create", "--out", filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	serveFleet(t, "--trusted-key", filepath.Join(dir, "ota.pub"))

	sys := pseudo(1, 3<<20)
	b1 := writeTestBundle(t, dir, filepath.Join(dir, "ota.key"), "1", sys)
	out, _, err := runCLI(ctx, "release", "push", b1)
	if err != nil || !strings.HasPrefix(out, "release 1 (gw for rpi4): ") || !strings.Contains(out, " chunks, ") {
		t.Fatalf("push: %q %v", out, err)
	}
	// Release 2 shares most of its system part with release 1: few new bytes.
	sys2 := bytes.Clone(sys)
	copy(sys2[1<<20:], "a small change in the middle of the system part")
	b2 := writeTestBundle(t, dir, filepath.Join(dir, "ota.key"), "2", sys2)
	if out, _, err = runCLI(ctx, "release", "push", b2); err != nil {
		t.Fatalf("push 2: %q %v", out, err)
	}

	out, _, err = runCLI(ctx, "release", "list", "--json")
	var rels []api.ReleaseInfo
	if err != nil || json.Unmarshal([]byte(out), &rels) != nil || len(rels) != 2 {
		t.Fatalf("list: %q %v", out, err)
	}
	st1, _ := os.Stat(b1)
	for _, r := range rels {
		if r.Name != "gw" || r.Board != "rpi4" || r.Chunks < 2 || r.Size != st1.Size() {
			t.Errorf("release %+v", r)
		}
	}
	byVersion := map[string]api.ReleaseInfo{}
	for _, r := range rels {
		byVersion[r.Version] = r
	}
	if n1, n2 := byVersion["1"].NewBytes, byVersion["2"].NewBytes; n2 <= 0 || n2 >= n1/2 {
		t.Errorf("release 2 stored %d new bytes, release 1 %d: chunks not shared", n2, n1)
	}
	if out, _, err = runCLI(ctx, "release", "list"); err != nil || !strings.HasPrefix(out, "VERSION") || !strings.Contains(out, "\n2 ") {
		t.Errorf("list: %q %v", out, err)
	}
	out, _, err = runCLI(ctx, "release", "show", "2", "--json")
	var info api.ReleaseInfo
	if err != nil || json.Unmarshal([]byte(out), &info) != nil || info.Version != "2" || info.SHA256 == "" {
		t.Errorf("show --json: %q %v", out, err)
	}
	if out, _, err = runCLI(ctx, "release", "show", "2"); err != nil || !strings.Contains(out, "Version:      2\n") || !strings.Contains(out, "SHA-256:      "+info.SHA256) {
		t.Errorf("show: %q %v", out, err)
	}
	if _, _, err = runCLI(ctx, "release", "show", "9"); err == nil || !strings.Contains(err.Error(), "404 not_found") {
		t.Errorf("show of an unknown release: %v", err)
	}

	// Refused pushes name the file or say why the server refused.
	notBundle := filepath.Join(dir, "notes.update")
	os.WriteFile(notBundle, []byte(strings.Repeat("not a bundle\n", 100)), 0o644)
	if _, _, err = runCLI(ctx, "release", "push", notBundle); err == nil || !strings.Contains(err.Error(), notBundle+" is not an update bundle") {
		t.Errorf("push of a non-bundle: %v", err)
	}
	if _, _, err = runCLI(ctx, "release", "push", filepath.Join(dir, "missing.update")); err == nil || !strings.Contains(err.Error(), "missing.update") {
		t.Errorf("push of a missing file: %v", err)
	}
	untrusted := writeTestBundle(t, t.TempDir(), filepath.Join(dir, "other.key"), "3", sys)
	if _, _, err = runCLI(ctx, "release", "push", untrusted); err == nil || !strings.Contains(err.Error(), "bad_bundle") || !strings.Contains(err.Error(), untrusted) {
		t.Errorf("push signed by an untrusted key: %v", err)
	}

	// Bad rollout flags are usage errors, caught before the server is asked.
	for _, args := range [][]string{
		{"--waves", "5%,x,100%"}, {"--waves", "50%"}, {"--waves", "25%,5%,100%"}, {"--waves", "5%%,100%"}, {"--waves", "-5%,100%"},
		{"--waves", "0x10,100"}, {"--waves", ""}, {"--max-failures", "200%"}, {"--max-failures", "two"}, {"--selector", "site"},
		{"--waves", "NaN,100"}, {"--waves", "1e1,100"},
	} {
		_, _, err := runCLI(ctx, append([]string{"release", "rollout", "2"}, args...)...)
		var ue UsageError
		if !errors.As(err, &ue) {
			t.Errorf("rollout %q: %v, want a usage error", args, err)
		}
	}
	if _, _, err = runCLI(ctx, "release", "status", "2"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("status before a rollout: %v", err)
	}

	out, _, err = runCLI(ctx, "release", "rollout", "2", "--selector", "site=berlin,ring=canary", "--waves", "5%,25,100%", "--max-failures", "2.5%", "--json")
	var st api.RolloutStatus
	if err != nil || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("rollout: %q %v", out, err)
	}
	if st.Version != "2" || len(st.Waves) != 3 || st.Waves[1] != 25 || st.MaxFailures != 2.5 || st.Selector["ring"] != "canary" || st.Selector["site"] != "berlin" {
		t.Errorf("rollout status %+v", st)
	}
	out, _, err = runCLI(ctx, "release", "status", "2")
	if err != nil || !strings.Contains(out, "Release:       2\n") || !strings.Contains(out, "State:         "+st.State+"\n") ||
		!strings.Contains(out, "Selector:      ring=canary,site=berlin\n") || !strings.Contains(out, "waves 5%,25%,100%") {
		t.Errorf("status: %q %v", out, err)
	}
	for _, c := range []struct{ action, want string }{{"pause", api.RolloutPaused}, {"resume", api.RolloutRunning}, {"abort", api.RolloutAborted}} {
		if out, _, err = runCLI(ctx, "release", c.action, "2"); err != nil || !strings.Contains(out, "State:         "+c.want+"\n") {
			t.Errorf("%s: %q %v", c.action, out, err)
		}
	}
	out, _, err = runCLI(ctx, "release", "status", "2", "--json")
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.State != api.RolloutAborted {
		t.Errorf("status after abort: %q %v", out, err)
	}
	if _, _, err = runCLI(ctx, "release", "resume", "2"); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("resume after abort: %v", err)
	}
}

// TestRolloutStatusText renders a halted rollout with its failures.
func TestRolloutStatusText(t *testing.T) {
	var b strings.Builder
	st := &api.RolloutStatus{Version: "7", State: api.RolloutHalted, Reason: "3 of 40 targeted devices failed, more than 2%",
		Selector: map[string]string{"site": "berlin"}, Waves: []float64{5, 25, 100}, MaxFailures: 2, Wave: 1,
		Selected: 160, Targeted: 40, Committed: 30, Failed: 3, Pending: 7,
		Failures: []api.RolloutFailure{{DeviceID: "10000000c0ffee42", State: api.UpdateFailed, Reason: "health timeout", Detail: "node not Ready after 10m"}}}
	if err := rolloutStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"State:         halted\n", "Halt reason:   3 of 40 targeted devices failed, more than 2%\n",
		"Wave:          2/3 (25% of the selected devices; waves 5%,25%,100%)\n", "Max failures:  2%\n",
		"Devices:       160 selected, 40 targeted: 30 committed, 3 failed, 7 pending\n",
		"Failures:\n  DEVICE            STATE   REASON          DETAIL\n  10000000c0ffee42  failed  health timeout  node not Ready after 10m\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, b.String())
		}
	}
}

func TestParsePercent(t *testing.T) {
	for s, want := range map[string]float64{"5%": 5, "5": 5, "100%": 100, "2.5%": 2.5, "0": 0} {
		if got, err := parsePercent(s); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "%", "5%%", " 5%", "5 %", "-1", "+5", "101%", "1e2", "0x5", "Inf", "NaN", "5.", ".5", "1_0"} {
		if _, err := parsePercent(s); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

// TestReleaseOCI pushes a bundle to an in-memory registry and pulls it back.
func TestReleaseOCI(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials of the person running the tests
	dir := t.TempDir()
	ctx := context.Background()
	if _, _, err := runCLI(ctx, "keys", "create", "--out", filepath.Join(dir, "ota")); err != nil {
		t.Fatal(err)
	}
	b := writeTestBundle(t, dir, filepath.Join(dir, "ota.key"), "4.2", pseudo(2, 1<<20))
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	ref := strings.TrimPrefix(reg.URL, "http://") + "/edge/gw:4.2"
	out, _, err := runCLI(ctx, "release", "push", b, "--oci", ref)
	if err != nil || !strings.HasPrefix(out, "pushed gw 4.2 (rpi4, ") || !strings.Contains(out, "@sha256:") {
		t.Fatalf("push --oci: %q %v", out, err)
	}
	pinned := strings.TrimSpace(out[strings.LastIndex(out, " ")+1:])
	pulled := filepath.Join(dir, "pulled.update")
	for _, r := range []string{ref, pinned} {
		out, _, err = runCLI(ctx, "release", "pull", r, "-o", pulled)
		if err != nil || !strings.HasPrefix(out, "pulled gw 4.2 (rpi4, ") {
			t.Fatalf("pull %s: %q %v", r, out, err)
		}
		x, _ := os.ReadFile(b)
		y, _ := os.ReadFile(pulled)
		if !bytes.Equal(x, y) {
			t.Fatalf("pull %s: the pulled bundle differs", r)
		}
	}
	for _, args := range [][]string{{"pull", ref}, {"pull", "UPPER/case:x", "-o", pulled}, {"push", b, "--oci", "bad ref"}} {
		var ue UsageError
		if _, _, err := runCLI(ctx, append([]string{"release"}, args...)...); !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
	if _, _, err := runCLI(ctx, "release", "pull", strings.TrimPrefix(reg.URL, "http://")+"/edge/gw:nope", "-o", filepath.Join(dir, "nope.update")); err == nil {
		t.Error("pull of an unknown tag: no error")
	}
	if _, err := os.Stat(filepath.Join(dir, "nope.update")); !os.IsNotExist(err) {
		t.Errorf("a failed pull left its output: %v", err)
	}
}

// testDevice is a device enrolled with the fleet server through the agent's client.
type testDevice struct {
	id string
	c  *fleetclient.Client
}

// enrollDevices enrolls n devices with token, reporting version.
func enrollDevices(t *testing.T, token string, n int, version string) []*testDevice {
	t.Helper()
	caPEM, err := os.ReadFile(os.Getenv("EDGEIMG_FLEET_CA"))
	if err != nil {
		t.Fatal(err)
	}
	var devs []*testDevice
	for i := range n {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		id := fmt.Sprintf("1000000%09d", i)
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, key)
		if err != nil {
			t.Fatal(err)
		}
		var cert *tls.Certificate
		c, err := fleetclient.New(os.Getenv("EDGEIMG_FLEET_URL"), caPEM, time.Now, func() *tls.Certificate { return cert })
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Enroll(context.Background(), api.EnrollRequest{Token: token, DeviceID: id, Version: version, Slot: "a",
			CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode([]byte(resp.Certificate))
		cert = &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
		devs = append(devs, &testDevice{id: id, c: c})
	}
	return devs
}

// beat sends a heartbeat running version, with the update status u (may be nil), and
// returns the version the fleet wants.
func (d *testDevice) beat(t *testing.T, version string, u *api.UpdateStatus) string {
	t.Helper()
	r, err := d.c.Heartbeat(context.Background(), api.Heartbeat{Version: version, Slot: "a", NodeReady: true, Update: u})
	if err != nil {
		t.Fatalf("heartbeat of %s: %v", d.id, err)
	}
	return r.Desired.Version
}

// TestReleaseRolloutDevices rolls a release out to enrolled devices: the first wave is
// targeted, a failure past --max-failures halts the rollout, status shows the failure, and
// resume and abort act on it.
func TestReleaseRolloutDevices(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	if _, _, err := runCLI(ctx, "keys", "create", "--out", filepath.Join(dir, "ota")); err != nil {
		t.Fatal(err)
	}
	serveFleet(t, "--trusted-key", filepath.Join(dir, "ota.pub"))
	token, _, err := runCLI(ctx, "fleet", "token", "create", "--uses", "10", "--label", "site=berlin")
	if err != nil {
		t.Fatal(err)
	}
	devs := enrollDevices(t, strings.TrimSpace(token), 4, "1")
	for _, d := range devs {
		d.beat(t, "1", nil)
	}
	if _, _, err := runCLI(ctx, "release", "push", writeTestBundle(t, dir, filepath.Join(dir, "ota.key"), "2", pseudo(3, 1<<20))); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(ctx, "release", "rollout", "2", "--selector", "site=berlin", "--waves", "50%,100%", "--max-failures", "10%", "--json")
	var st api.RolloutStatus
	if err != nil || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("rollout: %q %v", out, err)
	}
	if st.Selected != 4 || st.Targeted != 2 || st.Wave != 0 || st.State != api.RolloutRunning {
		t.Fatalf("rollout started: %+v", st)
	}
	var targeted []*testDevice
	for _, d := range devs {
		if d.beat(t, "1", nil) == "2" {
			targeted = append(targeted, d)
		}
	}
	if len(targeted) != 2 {
		t.Fatalf("%d devices told to run 2, want 2", len(targeted))
	}
	bad := targeted[0]
	bad.beat(t, "1", &api.UpdateStatus{Version: "2", State: api.UpdateFailed, Reason: "health timeout", Detail: "node not Ready"})
	targeted[1].beat(t, "2", &api.UpdateStatus{Version: "2", State: api.UpdateCommitted})

	// The server's rollout loop halts the rollout: 1 of 2 failed, more than 10%.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && st.State != api.RolloutHalted; time.Sleep(100 * time.Millisecond) {
		out, _, err = runCLI(ctx, "release", "status", "2", "--json")
		if err != nil || json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("status: %q %v", out, err)
		}
	}
	if st.State != api.RolloutHalted || st.Failed != 1 || st.Committed != 1 || st.Targeted != 2 || len(st.Failures) != 1 || st.Failures[0].DeviceID != bad.id {
		t.Fatalf("after a failure: %+v", st)
	}
	out, _, err = runCLI(ctx, "release", "status", "2")
	if err != nil || !strings.Contains(out, "State:         halted\n") || !strings.Contains(out, "Halt reason:   ") ||
		!strings.Contains(out, "Wave:          1/2 (50% of the selected devices") || !strings.Contains(out, "4 selected, 2 targeted: 1 committed, 1 failed, 0 pending") ||
		!strings.Contains(out, bad.id) || !strings.Contains(out, "health timeout") {
		t.Errorf("status:\n%s", out)
	}
	// Resume goes on anyway: the second wave targets the rest.
	out, _, err = runCLI(ctx, "release", "resume", "2", "--json")
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.State == api.RolloutHalted {
		t.Fatalf("resume: %q %v", out, err)
	}
	if out, _, err = runCLI(ctx, "release", "abort", "2"); err != nil || !strings.Contains(out, "State:         aborted\n") {
		t.Errorf("abort: %q %v", out, err)
	}
}
