package k3s

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/fleet/api"
)

type rec struct{ calls []string }

func (r *rec) Run(_ context.Context, name string, args ...string) error {
	r.calls = append(r.calls, name+" "+strings.Join(args, " "))
	return nil
}

// withK3s is a device root whose image ships K3s.
func withK3s(t *testing.T) device.Paths {
	t.Helper()
	p := device.Paths{Root: t.TempDir()}
	if err := os.MkdirAll(filepath.Dir(p.Path(device.K3sInfo)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Path(device.K3sInfo), []byte(`{"version": "v1.31.4+k3s1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestApplyWithoutK3s: an image built without K3s records the role and starts nothing.
func TestApplyWithoutK3s(t *testing.T) {
	p := device.Paths{Root: t.TempDir()}
	r := &rec{}
	if err := Apply(context.Background(), p, r, api.Role{Kind: api.RoleServer}, true, "truck-1", nil); err != nil {
		t.Fatal(err)
	}
	if len(r.calls) != 0 {
		t.Errorf("ran %v in an image without K3s", r.calls)
	}
	if _, err := os.Stat(p.Path(device.RoleFile)); err != nil {
		t.Errorf("role not recorded: %v", err)
	}
}

func TestApplyAndReset(t *testing.T) {
	ctx := context.Background()
	p := withK3s(t)
	r := &rec{}
	server := api.Role{Kind: api.RoleServer}
	agent := api.Role{Kind: api.RoleAgent, ServerURL: "https://10.0.0.1:6443", Token: "K10x"}
	if err := Apply(ctx, p, r, server, true, "truck-1", map[string]string{"b": "2", "a": "1"}); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(p.Path(device.K3sRoleConfig))
	if !strings.Contains(string(cfg), "node-name: \"truck-1\"\nnode-label:\n  - \"a=1\"\n  - \"b=2\"\nwrite-kubeconfig: \"/var/lib/rancher/k3s/k3s.yaml\"\n") {
		t.Errorf("config:\n%s", cfg)
	}
	if fi, _ := os.Stat(p.Path(device.K3sRoleConfig)); fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v", fi.Mode())
	}
	// Again: only makes sure it runs.
	if err := Apply(ctx, p, r, server, false, "truck-1", map[string]string{"a": "1", "b": "2"}); err != nil {
		t.Fatal(err)
	}
	// K3s ran: it has state; what the image ships does not count.
	for _, f := range []string{"agent/images/x.tar.zst", "server/manifests/app.yaml"} {
		os.MkdirAll(filepath.Dir(filepath.Join(p.Path(device.K3sDataDir), f)), 0o755)
		os.WriteFile(filepath.Join(p.Path(device.K3sDataDir), f), []byte("x"), 0o644)
	}
	if has, _ := State(p); has {
		t.Error("shipped files count as state")
	}
	os.MkdirAll(filepath.Join(p.Path(device.K3sDataDir), "server/db"), 0o755)
	os.MkdirAll(p.Path(device.K3sNodeDir), 0o755)
	err := Apply(ctx, p, r, agent, false, "truck-1", nil)
	if !errors.Is(err, ErrRoleChange) || !strings.Contains(err.Error(), "this node is a K3s server and K3s has state") {
		t.Fatalf("role change: %v", err)
	}
	if cfg2, _ := os.ReadFile(p.Path(device.K3sRoleConfig)); string(cfg2) != string(cfg) {
		t.Error("a refused change wrote the config")
	}
	if err := Reset(ctx, p, r); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"var/lib/rancher/k3s/server/db", device.K3sNodeDir, device.K3sRoleConfig, device.RoleFile} {
		if _, err := os.Stat(p.Path(gone)); err == nil {
			t.Errorf("%s survived the reset", gone)
		}
	}
	for _, kept := range []string{"var/lib/rancher/k3s/agent/images/x.tar.zst", "var/lib/rancher/k3s/server/manifests/app.yaml"} {
		if _, err := os.Stat(p.Path(kept)); err != nil {
			t.Errorf("the reset removed %s", kept)
		}
	}
	if err := Apply(ctx, p, r, agent, false, "", nil); err != nil {
		t.Fatal(err)
	}
	want := []string{"systemctl disable --now k3s-agent.service", "systemctl start k3s.service", "systemctl start k3s.service",
		"systemctl stop k3s.service k3s-agent.service", "systemctl disable --now k3s.service", "systemctl start k3s-agent.service"}
	if strings.Join(r.calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s", strings.Join(r.calls, "\n"))
	}
}
