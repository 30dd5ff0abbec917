package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/daemon"
	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/k3s"
	"github.com/edgeimg/edgeimg/agent/k3s/k3stest"
	"github.com/edgeimg/edgeimg/fleet/api"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestFleetDeviceRoleWithAgent is the documented role change, end to end: fleet serve, a real
// edgeimg-agent (daemon.Run, K3s faked by a recording runner) enrolled as a server whose K3s
// has state, then `fleet device role --agent-of` (refused by the node and reported in its
// heartbeats' last_errors), then the same with --reset (the node wipes its K3s state,
// enrolls again and starts k3s-agent.service with the join token).
func TestFleetDeviceRoleWithAgent(t *testing.T) {
	dir := serveFleet(t, "--heartbeat", "0") // 0: the devices keep their own interval (20 ms here)
	ctx := context.Background()
	secret, _, err := runCLI(ctx, "fleet", "token", "create", "--uses", "1")
	if err != nil {
		t.Fatal(err)
	}
	const dev = "10000000c0ffee42"
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	p := device.Paths{Root: t.TempDir()}
	card := t.TempDir()
	for path, data := range map[string]string{
		p.Path(device.FleetConfig):                   fmt.Sprintf(`{"url": %q}`, os.Getenv("EDGEIMG_FLEET_URL")),
		p.Path(device.FleetCA):                       string(ca),
		p.Path(device.DeviceTreeSerial):              dev + "\x00",
		p.Path(device.K3sInfo):                       `{"version": "v1.31.4+k3s1", "role": "server"}`,
		filepath.Join(card, device.SettingsOnConfig): "token: " + strings.TrimSpace(secret) + "\nhostname: truck-42\n",
	} {
		must(t, os.MkdirAll(filepath.Dir(path), 0o755))
		must(t, os.WriteFile(path, []byte(data), 0o644))
	}
	r := &k3stest.Recorder{}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(runCtx, daemon.Config{Paths: p, ConfigDir: card, Version: "v1.2.3", Slot: "a", Runner: r, Heartbeat: 20 * time.Millisecond,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Node: func(context.Context) (bool, []string, error) { return true, nil, nil }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()
	waitUntil(t, "the enrolled server", func() bool {
		a, _ := k3s.LoadApplied(p)
		return a != nil && !a.Provisional && a.Role.Kind == api.RoleServer && slices.Contains(r.Calls(), "systemctl start k3s.service")
	})
	// K3s ran as a server: it has state.
	must(t, os.MkdirAll(p.Path(device.K3sDataDir+"/server/db"), 0o755))

	// (a) The change alone is refused by the node and reported.
	out, _, err := runCLI(ctx, "fleet", "device", "role", dev, "--agent-of", "https://10.0.0.5:6443", "--k3s-token", "K10join")
	if err != nil || !strings.Contains(out, "role agent of https://10.0.0.5:6443") {
		t.Fatalf("role: %q %v", out, err)
	}
	waitUntil(t, "the refusal in a heartbeat", func() bool {
		hb := showDevice(t, dev).Device.LastHeartbeat
		return hb != nil && slices.ContainsFunc(hb.LastErrors, func(s string) bool { return strings.Contains(s, "role change refused") })
	})
	d := showDevice(t, dev)
	if d.Device.LastHeartbeat.Role != api.RoleServer {
		t.Errorf("the node reports role %q, want it still a server", d.Device.LastHeartbeat.Role)
	}
	if a, _ := k3s.LoadApplied(p); a == nil || a.Role.Kind != api.RoleServer {
		t.Errorf("applied %+v after a refused change", a)
	}
	if out, _, err := runCLI(ctx, "fleet", "device", "show", dev); err != nil || !strings.Contains(out, "Error:        role change refused: this node is a K3s server and K3s has state") {
		t.Errorf("device show does not show the refusal: %q %v", out, err)
	}

	// (b) With --reset the node wipes its K3s state and takes the role.
	out, _, err = runCLI(ctx, "fleet", "device", "role", dev, "--agent-of", "https://10.0.0.5:6443", "--k3s-token", "K10join", "--reset")
	if err != nil || !strings.Contains(out, "reset ordered") || strings.Contains(out, "K10join") {
		t.Fatalf("role --reset: %q %v", out, err)
	}
	waitUntil(t, "the agent role", func() bool {
		a, _ := k3s.LoadApplied(p)
		return a != nil && a.Role.Kind == api.RoleAgent && slices.Contains(r.Calls(), "systemctl start k3s-agent.service")
	})
	waitUntil(t, "a heartbeat as an agent", func() bool {
		d := showDevice(t, dev).Device
		return d.State == api.StateActive && d.LastHeartbeat != nil && d.LastHeartbeat.Role == api.RoleAgent
	})
	if _, err := os.Stat(p.Path(device.K3sDataDir + "/server/db")); err == nil {
		t.Error("the server's K3s state survived the reset")
	}
	cfg, err := os.ReadFile(p.Path(device.K3sRoleConfig))
	if err != nil || !strings.Contains(string(cfg), `server: "https://10.0.0.5:6443"`) || !strings.Contains(string(cfg), `token: "K10join"`) {
		t.Errorf("agent config: %q %v", cfg, err)
	}
	calls := strings.Join(r.Calls(), "\n")
	if !strings.Contains(calls, "systemctl stop k3s.service k3s-agent.service\nsystemctl disable --now k3s.service\nsystemctl start k3s-agent.service") {
		t.Errorf("runner calls:\n%s", calls)
	}
}
