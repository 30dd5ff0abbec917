package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/fleetclient"
	"github.com/edgeimg/edgeimg/agent/identity"
	"github.com/edgeimg/edgeimg/fleet/api"
)

// serveFleet runs fleet init and fleet serve in a temporary directory and points the admin
// commands at the server (EDGEIMG_FLEET_URL, EDGEIMG_ADMIN_TOKEN, EDGEIMG_FLEET_CA). It
// returns the directory; the server stops when the test ends. serveArgs are added to serve's.
func serveFleet(t *testing.T, serveArgs ...string) string {
	t.Helper()
	dir := t.TempDir()
	if _, _, err := runCLI(context.Background(), "fleet", "init", "--dir", dir); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		_, _, err := runCLI(ctx, append([]string{"fleet", "serve", "--listen", addr, "--dir", dir, "--enroll-rate", "0"}, serveArgs...)...)
		served <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	token, _ := os.ReadFile(filepath.Join(dir, "admin-token"))
	t.Setenv("EDGEIMG_FLEET_URL", "https://"+addr)
	t.Setenv("EDGEIMG_ADMIN_TOKEN", strings.TrimSpace(string(token)))
	t.Setenv("EDGEIMG_FLEET_CA", filepath.Join(dir, "ca.pem"))
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, _, err = runCLI(context.Background(), "fleet", "token", "list"); err == nil {
			return dir
		}
	}
	t.Fatalf("the fleet server did not come up: %v", err)
	return ""
}

// enrollDevice enrolls a device with token as the agent does and returns the answer.
func enrollDevice(t *testing.T, dir, id, token string) (*api.EnrollResponse, error) {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := fleetclient.New(os.Getenv("EDGEIMG_FLEET_URL"), ca, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	csr, err := identity.CSR(id, key)
	if err != nil {
		t.Fatal(err)
	}
	return c.Enroll(context.Background(), api.EnrollRequest{Token: token, DeviceID: id, CSR: csr})
}

func tokenList(t *testing.T) []api.TokenInfo {
	t.Helper()
	out, _, err := runCLI(context.Background(), "fleet", "token", "list", "--json")
	var toks []api.TokenInfo
	if err != nil || json.Unmarshal([]byte(out), &toks) != nil {
		t.Fatalf("token list: %q %v", out, err)
	}
	return toks
}

// TestFleetTokenRevoke: fleet token revoke ID (as token list shows it) makes enrollments
// with the token fail with revoked_token; the list shows it revoked; it is idempotent; an
// unknown ID fails with a 404 that names it.
func TestFleetTokenRevoke(t *testing.T) {
	dir := serveFleet(t)
	ctx := context.Background()
	secret, _, err := runCLI(ctx, "fleet", "token", "create", "--uses", "3")
	if err != nil {
		t.Fatal(err)
	}
	secret = strings.TrimSpace(secret)
	if _, err := enrollDevice(t, dir, "10000000c0ffee01", secret); err != nil {
		t.Fatalf("enrollment before the revocation: %v", err)
	}
	id := tokenList(t)[0].ID
	out, _, err := runCLI(ctx, "fleet", "token", "revoke", id)
	if err != nil || !strings.HasPrefix(out, "token "+id+": revoked at ") || !strings.Contains(out, "2 of 3 uses left unused") {
		t.Errorf("token revoke: %q %v", out, err)
	}
	if _, _, err := runCLI(ctx, "fleet", "token", "revoke", id); err != nil {
		t.Errorf("revoking again: %v", err)
	}
	toks := tokenList(t)
	if len(toks) != 1 || toks[0].RevokedAt.IsZero() {
		t.Errorf("token list --json: %+v", toks)
	}
	out, _, err = runCLI(ctx, "fleet", "token", "list")
	if lines := strings.Split(out, "\n"); err != nil || len(lines) < 2 || !strings.Contains(lines[0], "STATE") || !strings.Contains(lines[1], id+"  revoked ") {
		t.Errorf("token list: %q %v", out, err)
	}
	_, err = enrollDevice(t, dir, "10000000c0ffee02", secret)
	var fe *fleetclient.Error
	if !errors.As(err, &fe) || fe.Code != "revoked_token" {
		t.Errorf("enrollment with the revoked token: %v", err)
	}
	if _, _, err := runCLI(ctx, "fleet", "token", "revoke", "0123456789ab"); err == nil || !strings.Contains(err.Error(), "404 not_found") || !strings.Contains(err.Error(), `"0123456789ab"`) {
		t.Errorf("unknown token: %v", err)
	}
	if _, _, err := runCLI(ctx, "fleet", "token", "revoke"); err == nil {
		t.Error("token revoke without an ID succeeded")
	}
}

// TestFleetDeviceRole: fleet device role sets the desired role (and with --reset orders the
// reset), prints the role without the join token, and refuses missing or contradictory
// flags with a usage error.
func TestFleetDeviceRole(t *testing.T) {
	dir := serveFleet(t)
	ctx := context.Background()
	const dev = "10000000c0ffee01"
	secret, _, err := runCLI(ctx, "fleet", "token", "create", "--uses", "1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enrollDevice(t, dir, dev, strings.TrimSpace(secret)); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "node-token")
	if err := os.WriteFile(tokenFile, []byte("K10fromfile::server:abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "no role: give --server, or --agent-of"},
		{[]string{"--server", "--agent-of", "https://10.0.0.5:6443"}, "contradict"},
		{[]string{"--agent-of", "https://10.0.0.5:6443"}, "needs the K3s join token"},
		{[]string{"--server", "--k3s-token", "x"}, "go with --agent-of"},
		{[]string{"--agent-of", "https://10.0.0.5:6443", "--k3s-token", "x", "--k3s-token-file", tokenFile}, "contradict"},
		{[]string{"--agent-of", "http://10.0.0.5:6443", "--k3s-token", "K10secret"}, "must be an https:// URL"},
		{[]string{"--agent-of", "https://10.0.0.5:6443", "--k3s-token-file", empty}, "is empty"},
		{[]string{"--agent-of", "https://10.0.0.5:6443", "--k3s-token-file", filepath.Join(dir, "missing")}, "--k3s-token-file"},
	} {
		_, _, err := runCLI(ctx, append([]string{"fleet", "device", "role", dev}, c.args...)...)
		if !errors.As(err, new(UsageError)) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "K10secret") {
			t.Errorf("role %q: %v, want a usage error with %q", c.args, err, c.want)
		}
	}
	if _, _, err := runCLI(ctx, "fleet", "device", "role", "--server"); !errors.As(err, new(UsageError)) {
		t.Errorf("role without an ID: %v", err)
	}

	out, _, err := runCLI(ctx, "fleet", "device", "role", dev, "--agent-of", "https://10.0.0.5:6443", "--k3s-token-file", tokenFile)
	if err != nil || !strings.Contains(out, dev+": role agent of https://10.0.0.5:6443") || strings.Contains(out, "K10fromfile") {
		t.Errorf("role --agent-of: %q %v", out, err)
	}
	d := showDevice(t, dev)
	if d.Device.Role != (api.Role{Kind: api.RoleAgent, ServerURL: "https://10.0.0.5:6443", Token: "K10fromfile::server:abc"}) || d.Device.State != api.StateActive {
		t.Errorf("device after role: %+v", d.Device)
	}
	t.Setenv(envK3sToken, "K10fromenv")
	out, _, err = runCLI(ctx, "fleet", "device", "role", dev, "--agent-of", "https://10.0.0.6:6443", "--reset")
	if err != nil || !strings.Contains(out, "role agent of https://10.0.0.6:6443; reset ordered") || strings.Contains(out, "K10fromenv") {
		t.Errorf("role --reset: %q %v", out, err)
	}
	if d := showDevice(t, dev); d.Device.Role.Token != "K10fromenv" || d.Device.State != api.StateReset {
		t.Errorf("device after role --reset: %+v", d.Device)
	}
	if out, _, err = runCLI(ctx, "fleet", "device", "role", dev, "--server"); err != nil || !strings.Contains(out, dev+": role server") {
		t.Errorf("role --server: %q %v", out, err)
	}
	if _, _, err := runCLI(ctx, "fleet", "device", "role", "nobody", "--server"); err == nil || !strings.Contains(err.Error(), "404 not_found") {
		t.Errorf("role of an unknown device: %v", err)
	}
}

func showDevice(t *testing.T, id string) api.DeviceDetail {
	t.Helper()
	out, _, err := runCLI(context.Background(), "fleet", "device", "show", id, "--json")
	var d api.DeviceDetail
	if err != nil || json.Unmarshal([]byte(out), &d) != nil {
		t.Fatalf("device show: %q %v", out, err)
	}
	return d
}
