package k3s

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/fleet/api"
)

// Runner runs system commands (systemctl); tests record the calls instead.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) error
}

// ExecRunner runs commands with os/exec.
type ExecRunner struct{}

// Run runs name with args and returns its output in the error when it fails.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Units of the two roles.
const (
	ServerUnit = "k3s.service"
	AgentUnit  = "k3s-agent.service"
)

// Unit returns the systemd unit of a role kind.
func Unit(kind string) string {
	if kind == api.RoleAgent {
		return AgentUnit
	}
	return ServerUnit
}

// Applied is the role configured on the device (role.json).
type Applied struct {
	Role api.Role `json:"role"`
	// Provisional is set for the standalone server the agent starts on its own while the
	// device is not enrolled yet (offline first).
	Provisional bool `json:"provisional,omitempty"`
}

// ErrRoleChange is wrapped by Apply's refusal to change the role of a node with state.
var ErrRoleChange = errors.New("role change refused")

// LoadApplied returns the configured role, or nil.
func LoadApplied(p device.Paths) (*Applied, error) {
	b, err := os.ReadFile(p.Path(device.RoleFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the applied role: %w", err)
	}
	var a Applied
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Path(device.RoleFile), err)
	}
	return &a, nil
}

// State reports whether K3s has state on the device, and where. Only files K3s makes when it
// runs count: the data directory also holds what the image ships (agent/images with the
// air-gap archives, server/manifests and server/static), which are there before the first start.
func State(p device.Paths) (bool, string) {
	for _, rel := range []string{"server/db", "server/tls", "server/token", "server/cred", "agent/client-kubelet.crt", "agent/kubelet.kubeconfig", "agent/etc", "agent/containerd"} {
		path := filepath.Join(p.Path(device.K3sDataDir), rel)
		if _, err := os.Lstat(path); err == nil {
			return true, path
		}
	}
	return false, ""
}

// Config renders the K3s config for a role. The node is named after the hostname when there is
// one, and labelled with the device's labels.
func Config(role api.Role, hostname string, labels map[string]string) []byte {
	var b strings.Builder
	b.WriteString("# Written by edgeimg-agent: the K3s role assigned by the fleet (" + role.String() + ").\n")
	if hostname != "" {
		b.WriteString("node-name: " + strconv.Quote(hostname) + "\n")
	}
	if len(labels) > 0 {
		b.WriteString("node-label:\n")
		keys := make([]string, 0, len(labels))
		for k := range labels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b.WriteString("  - " + strconv.Quote(k+"="+labels[k]) + "\n")
		}
	}
	switch role.Kind {
	case api.RoleAgent:
		b.WriteString("server: " + strconv.Quote(role.ServerURL) + "\n")
		if role.Token != "" { // else the image's config.yaml has it (ImageRole)
			b.WriteString("token: " + strconv.Quote(role.Token) + "\n")
		}
	default:
		// The root is read-only: K3s writes its kubeconfig on the data partition.
		b.WriteString("write-kubeconfig: " + strconv.Quote("/"+device.K3sKubeconfig) + "\n")
		b.WriteString("write-kubeconfig-mode: \"0600\"\n")
	}
	return []byte(b.String())
}

// Apply configures role and starts its K3s service: it writes the role's config (0600: an
// agent's holds the join token) and role.json, disables the other role's unit when the kind
// is new, and starts (or,
// when the config changed, restarts) the role's unit. A change of role (kind or server) on a
// node whose K3s has state is refused (ErrRoleChange): Reset first. Applying the same role
// again only makes sure it runs.
//
// A provisional agent role may come without a token: the image's role (ImageRole), whose join
// token is in the image's config.yaml. A server role on an image whose config.yaml joins a
// server (an agent image) clears the image's server and token, so that the node is a
// standalone server and does not join the image's.
func Apply(ctx context.Context, p device.Paths, r Runner, role api.Role, provisional bool, hostname string, labels map[string]string) error {
	check := role
	if provisional && role.Kind == api.RoleAgent && role.Token == "" {
		check.Token = "from-the-image" // ImageRole: the token is in the image's config.yaml
	}
	if err := check.Validate(); err != nil {
		return err
	}
	cur, err := LoadApplied(p)
	if err != nil {
		return err
	}
	if cur != nil && !cur.Role.Equal(role) {
		if has, where := State(p); has {
			return fmt.Errorf("%w: this node is a K3s %s and K3s has state (%s); changing it to %s needs a reset (edgeimg fleet device reset, or edgeimg-agent reset on the device)",
				ErrRoleChange, cur.Role, where, role)
		}
	}
	cfg := Config(role, hostname, labels)
	if role.Kind == api.RoleServer {
		img, err := imageConfig(p)
		if err != nil {
			return err
		}
		for _, k := range joinKeys {
			if _, ok := img[k]; ok {
				// config.yaml.d wins over config.yaml: an empty value unsets the image's.
				cfg = append(cfg, k+": \"\"\n"...)
			}
		}
	}
	path := p.Path(device.K3sRoleConfig)
	old, err := os.ReadFile(path)
	changed := err != nil || !bytes.Equal(old, cfg)
	if changed {
		if err := device.WriteFileAtomic(path, cfg, 0o600); err != nil {
			return err
		}
	}
	b, _ := json.MarshalIndent(Applied{Role: role, Provisional: provisional}, "", "  ")
	if err := device.WriteFileAtomic(p.Path(device.RoleFile), append(b, '\n'), 0o600); err != nil {
		return err
	}
	if !Installed(p) {
		// An image built without K3s: the role is recorded for when an update brings K3s,
		// and there is nothing to start.
		return nil
	}
	other := ServerUnit
	if role.Kind == api.RoleServer {
		other = AgentUnit
	}
	if cur == nil || cur.Role.Kind != role.Kind {
		// The agent decides which unit runs: the other one is stopped and kept from starting.
		if err := r.Run(ctx, "systemctl", "disable", "--now", other); err != nil {
			return fmt.Errorf("stopping %s: %w", other, err)
		}
	}
	verb := "start"
	if changed && cur != nil {
		verb = "restart"
	}
	if err := r.Run(ctx, "systemctl", verb, Unit(role.Kind)); err != nil {
		return fmt.Errorf("starting %s: %w", Unit(role.Kind), err)
	}
	return nil
}

// joinKeys are the K3s config keys that make a node join a server.
var joinKeys = []string{"server", "token", "token-file"}

// imageConfig reads the image's base K3s config; nil when there is none.
func imageConfig(p device.Paths) (map[string]any, error) {
	b, err := os.ReadFile(p.Path(device.K3sImageConfig))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the image's K3s config: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Path(device.K3sImageConfig), err)
	}
	return m, nil
}

// ImageRole returns the role the image starts K3s in until the fleet assigns one: "role" of
// the image's k3s.json (the spec's k3s.role; server when it has none). For an agent it is
// the server of the image's config.yaml, with no token: the config.yaml has it (token or
// token-file), and K3s reads it there.
func ImageRole(p device.Paths) (api.Role, error) {
	b, err := os.ReadFile(p.Path(device.K3sInfo))
	if errors.Is(err, fs.ErrNotExist) {
		return api.Role{Kind: api.RoleServer}, nil
	}
	if err != nil {
		return api.Role{}, fmt.Errorf("reading the image's K3s settings: %w", err)
	}
	var info struct {
		Role string `json:"role"`
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return api.Role{}, fmt.Errorf("%s: %w", p.Path(device.K3sInfo), err)
	}
	switch info.Role {
	case "", api.RoleServer:
		return api.Role{Kind: api.RoleServer}, nil
	case api.RoleAgent:
	default:
		return api.Role{}, fmt.Errorf("%s: role %q is not %s or %s", p.Path(device.K3sInfo), info.Role, api.RoleServer, api.RoleAgent)
	}
	img, err := imageConfig(p)
	if err != nil {
		return api.Role{}, err
	}
	server, _ := img["server"].(string)
	_, hasToken := img["token"]
	_, hasTokenFile := img["token-file"]
	if !strings.HasPrefix(server, "https://") || !(hasToken || hasTokenFile) {
		return api.Role{}, fmt.Errorf("the image's role is agent but %s has no https server and token (or token-file) to join", p.Path(device.K3sImageConfig))
	}
	return api.Role{Kind: api.RoleAgent, ServerURL: server}, nil
}

// Installed reports whether the image ships K3s (the builder writes device.K3sInfo then).
func Installed(p device.Paths) bool {
	_, err := os.Stat(p.Path(device.K3sInfo))
	return err == nil
}

// kept are the parts of the K3s data directory that the image ships.
var kept = []string{"agent/images", "server/manifests", "server/static"}

// Reset stops K3s and removes its state (keeping what the image ships), the node password,
// the role config and role.json. The device's ID, key, certificate and settings stay.
func Reset(ctx context.Context, p device.Paths, r Runner) error {
	if err := r.Run(ctx, "systemctl", "stop", ServerUnit, AgentUnit); err != nil {
		return fmt.Errorf("stopping K3s: %w", err)
	}
	data := p.Path(device.K3sDataDir)
	if err := removeExcept(data, "", kept); err != nil {
		return err
	}
	for _, rel := range []string{device.K3sNodeDir, device.K3sRoleConfig, device.RoleFile} {
		if err := os.RemoveAll(p.Path(rel)); err != nil {
			return fmt.Errorf("removing %s: %w", p.Path(rel), err)
		}
	}
	return nil
}

// removeExcept removes everything under dir/rel except the kept paths (relative to dir).
func removeExcept(dir, rel string, keep []string) error {
	entries, err := os.ReadDir(filepath.Join(dir, rel))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("resetting K3s: %w", err)
	}
	for _, e := range entries {
		sub := filepath.Join(rel, e.Name())
		switch {
		case slices.Contains(keep, sub):
		case slices.ContainsFunc(keep, func(k string) bool { return strings.HasPrefix(k, sub+"/") }) && e.IsDir():
			if err := removeExcept(dir, sub, keep); err != nil {
				return err
			}
		default:
			if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
				return fmt.Errorf("resetting K3s: %w", err)
			}
		}
	}
	return nil
}
