package daemon

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/k3s"
	"github.com/edgeimg/edgeimg/agent/k3s/k3stest"
	"github.com/edgeimg/edgeimg/fleet/api"
)

// agentImage makes the device's image one whose default role is agent (k3s.role: agent in
// the spec): k3s.json says so and the image's config.yaml has the server and its token.
func agentImage(t *testing.T, p device.Paths) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p.Path(device.K3sImageConfig)), 0o755))
	must(t, os.MkdirAll(filepath.Dir(p.Path(device.K3sInfo)), 0o755))
	must(t, os.WriteFile(p.Path(device.K3sInfo), []byte(`{"version": "v1.31.4+k3s1", "role": "agent"}`), 0o644))
	must(t, os.WriteFile(p.Path(device.K3sImageConfig), []byte("server: https://10.0.0.1:6443\ntoken: K10image\nwrite-kubeconfig: /var/lib/rancher/k3s/k3s.yaml\n"), 0o600))
}

// TestImageRoleAgentStandalone: without a fleet, an image whose default role is agent starts
// k3s-agent.service (never the server) with the image's server and token.
func TestImageRoleAgentStandalone(t *testing.T) {
	p := device.Paths{Root: t.TempDir()}
	card := t.TempDir()
	must(t, os.MkdirAll(filepath.Dir(p.Path(device.DeviceTreeSerial)), 0o755))
	must(t, os.WriteFile(p.Path(device.DeviceTreeSerial), []byte(id+"\x00"), 0o644))
	agentImage(t, p)
	r := &k3stest.Recorder{}
	var logs logBuf
	stop := runAgent(testConfig(p, card, r, &logs))
	waitFor(t, "the K3s agent", func() bool { return slices.Contains(r.Calls(), "systemctl start "+k3s.AgentUnit) })
	must(t, stop())
	if calls := r.Calls(); !slices.Equal(calls, []string{"systemctl disable --now " + k3s.ServerUnit, "systemctl start " + k3s.AgentUnit}) {
		t.Errorf("runner calls %q", calls)
	}
	a, err := k3s.LoadApplied(p)
	must(t, err)
	if a == nil || !a.Provisional || a.Role != (api.Role{Kind: api.RoleAgent, ServerURL: "https://10.0.0.1:6443"}) {
		t.Errorf("applied %+v, want a provisional agent of the image's server", a)
	}
	cfg := read(t, p.Path(device.K3sRoleConfig))
	if !strings.Contains(cfg, `server: "https://10.0.0.1:6443"`) || strings.Contains(cfg, "token") {
		t.Errorf("role config (the token stays in the image's config.yaml):\n%s", cfg)
	}
}

// TestImageRoleAgentBroken: an agent image whose config.yaml lacks the server does not start
// K3s as anything and says why.
func TestImageRoleAgentBroken(t *testing.T) {
	p := device.Paths{Root: t.TempDir()}
	must(t, os.MkdirAll(filepath.Dir(p.Path(device.DeviceTreeSerial)), 0o755))
	must(t, os.WriteFile(p.Path(device.DeviceTreeSerial), []byte(id+"\x00"), 0o644))
	agentImage(t, p)
	must(t, os.WriteFile(p.Path(device.K3sImageConfig), []byte("token: K10image\n"), 0o600))
	r := &k3stest.Recorder{}
	var logs logBuf
	err := Run(context.Background(), testConfig(p, t.TempDir(), r, &logs))
	if err == nil || !strings.Contains(err.Error(), "the image's role is agent but") || !strings.Contains(err.Error(), "etc/rancher/k3s/config.yaml has no https server") {
		t.Errorf("Run: %v", err)
	}
	if calls := r.Calls(); len(calls) != 0 {
		t.Errorf("runner calls %q", calls)
	}
}

// TestImageRoleAgentOffline: an agent image that cannot reach the fleet at first boot starts
// the K3s agent of the image's server at once; once enrolled, the fleet's role wins: here a
// standalone server (K3s has no state yet), which then clears the image's server and token.
func TestImageRoleAgentOffline(t *testing.T) {
	f := newFleet(t)
	tok := f.newToken(1, nil) // the fleet assigns a standalone server
	f.stop()
	p, card := newDevice(t, f, tok)
	agentImage(t, p)
	r := &k3stest.Recorder{}
	var logs logBuf
	cfg := testConfig(p, card, r, &logs)
	cfg.FirstAttempt = 100 * time.Millisecond
	stop := runAgent(cfg)
	waitFor(t, "the provisional K3s agent", func() bool { return slices.Contains(r.Calls(), "systemctl start "+k3s.AgentUnit) })
	if a, _ := k3s.LoadApplied(p); a == nil || !a.Provisional || a.Role.Kind != api.RoleAgent {
		t.Errorf("applied %+v", a)
	}
	if slices.Contains(r.Calls(), "systemctl start "+k3s.ServerUnit) {
		t.Error("the K3s server started before the fleet said so")
	}
	f.start()
	waitFor(t, "the fleet's role", func() bool {
		a, _ := k3s.LoadApplied(p)
		return a != nil && !a.Provisional && a.Role.Kind == api.RoleServer
	})
	waitFor(t, "a heartbeat as a server", func() bool {
		d := f.device(id)
		return d != nil && d.Device.LastHeartbeat != nil && d.Device.LastHeartbeat.Role == api.RoleServer
	})
	must(t, stop())
	calls := strings.Join(r.Calls(), "\n")
	if !strings.Contains(calls, "systemctl start k3s-agent.service\nsystemctl disable --now k3s-agent.service\nsystemctl restart k3s.service") {
		t.Errorf("runner calls:\n%s", calls)
	}
	roleCfg := read(t, p.Path(device.K3sRoleConfig))
	if !strings.Contains(roleCfg, "server: \"\"\n") || !strings.Contains(roleCfg, "token: \"\"\n") || !strings.Contains(roleCfg, "write-kubeconfig") {
		t.Errorf("server role config does not clear the image's server and token:\n%s", roleCfg)
	}
}
