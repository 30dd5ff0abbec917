package spec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestK3sDefaults(t *testing.T) {
	s, err := Decode(strings.NewReader("name: a\nboard: rpi4\nk3s: {}\n"), "k3s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.SetDefaults(testDefaults)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	k := s.K3s
	if k.Version != DefaultK3sVersion || k.Role != "server" || k.Binary.URL != "https://github.com/k3s-io/k3s/releases/download/v1.31.4+k3s1/k3s-arm64" {
		t.Errorf("k3s defaults: %+v", k)
	}
	if s.Hardware.RAM != 4*GiB || s.CertManager.Version != "v1.16.2" || s.CertManager.Enabled == nil || !*s.CertManager.Enabled {
		t.Errorf("defaults: %+v %+v", s.Hardware, s.CertManager)
	}

	// Without k3s nothing is added, and the payload's fields are errors.
	s, err = Decode(strings.NewReader("name: a\nboard: rpi4\nmanifests: [m.yaml]\nimages: [docker.io/x/y:1]\n"), "no-k3s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.SetDefaults(testDefaults)
	if s.Hardware.RAM != 0 || s.CertManager.Enabled != nil {
		t.Errorf("defaults without k3s: %+v %+v", s.Hardware, s.CertManager)
	}
	wantErrs(t, s.Validate(), "manifests: needs a k3s section", "images: needs a k3s section")
}

func TestK3sValidate(t *testing.T) {
	text := `name: a
board: rpi4
k3s:
  version: v1.99.0+k3s1
  binary: {url: "ftp://x/k3s", sha256: ABC}
  role: worker
  config:
    write-kubeconfig: /etc/rancher/k3s/k3s.yaml
    token: secret
    --flag: x
images: [nginx, "docker.io/x/y:1", "x/y:1"]
certManager: {version: "1.16", enabled: true}
hardware: {ram: 3GiB}
registries:
  mirrors: {"docker.io": "localhost:5000", "Bad Host": "http://x"}
  auth: {"ghcr.io": {username: bot}}
`
	s, err := Decode(strings.NewReader(text), "bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.SetDefaults(testDefaults)
	wantErrs(t, s.Validate(),
		`k3s.version: "v1.99.0+k3s1": edgeimg has no system image list for it (supported: v1.31.4+k3s1)`,
		`k3s.binary.url: "ftp://x/k3s" is not an http(s) URL`,
		`k3s.binary.sha256: "ABC" is not a lower-case hex SHA-256`,
		`k3s.role: "worker" is not one of server, agent`,
		`k3s.config: "--flag" is not a K3s flag name`,
		`k3s.config.token: is set on the device by edgeimg-agent`,
		`k3s.config.write-kubeconfig: /etc/rancher/k3s/k3s.yaml: must be a path under /var or /run`,
		`images[0]: image reference "nginx"`,
		`images[2]: "x/y:1" is already images[1]`,
		`certManager.version: "1.16" is not a release version`,
		`hardware.ram: 3GiB is not a variant of rpi4 (2GiB, 4GiB, 8GiB)`,
		`registries.mirrors: "Bad Host" is not a registry host`,
		`registries.mirrors.docker.io: "localhost:5000" is not an http(s)://host[:port][/prefix] URL`,
		`registries.auth.ghcr.io.password: must be set with username`,
	)
}

// cert-manager is on by default with k3s; a release edgeimg has no chart for is an error
// unless cert-manager is off.
func TestCertManagerVersions(t *testing.T) {
	for text, want := range map[string]string{
		"certManager: {version: v1.15.0}":                 `certManager.version: "v1.15.0": edgeimg has no chart and image list for it (supported: v1.16.2; or set enabled: false)`,
		"certManager: {version: v1.15.0, enabled: true}":  `certManager.version: "v1.15.0": edgeimg has no chart and image list for it`,
		"certManager: {version: v1.15.0, enabled: false}": "",
		"certManager: {enabled: false}":                   "",
		"certManager: {version: v1.16.2}":                 "",
	} {
		s, err := Decode(strings.NewReader("name: a\nboard: rpi4\nk3s: {}\n"+text+"\n"), "cm.yaml")
		if err != nil {
			t.Fatal(err)
		}
		s.SetDefaults(testDefaults)
		if want == "" {
			if err := s.Validate(); err != nil {
				t.Errorf("%s: %v", text, err)
			}
			continue
		}
		wantErrs(t, s.Validate(), want)
	}
}

func TestK3sManifestPathsResolved(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "edgeimg.yaml")
	if err := os.WriteFile(p, []byte("name: a\nk3s: {}\nmanifests: [manifests/, /abs/x.yaml]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if s.Manifests[0] != filepath.Join(dir, "manifests") || s.Manifests[1] != "/abs/x.yaml" {
		t.Errorf("manifests: %v", s.Manifests)
	}
}

// TestK3sAgentRole: an image whose default role is agent must name the server it joins
// (https) and its token (or token-file); the errors name the field and never echo the token.
func TestK3sAgentRole(t *testing.T) {
	for _, c := range []struct {
		name, config string
		want         []string
	}{
		{"server and token", `{server: "https://10.0.0.1:6443", token: K10secret}`, nil},
		{"server and token-file", `{server: "https://k3s.example.com:6443", token-file: /var/lib/edgeimg/k3s-token}`, nil},
		{"nothing", `{}`, []string{"k3s.config.server: must be set with k3s.role: agent", "k3s.config.token: must be set (or k3s.config.token-file) with k3s.role: agent"}},
		{"no token", `{server: "https://10.0.0.1:6443"}`, []string{"k3s.config.token: must be set"}},
		{"no server", `{token: K10secret}`, []string{"k3s.config.server: must be set"}},
		{"http server", `{server: "http://10.0.0.1:6443", token: K10secret}`, []string{`k3s.config.server: http://10.0.0.1:6443 is not an https://HOST[:PORT] URL`}},
		{"server not a string", `{server: 6443, token: K10secret}`, []string{`k3s.config.server: 6443 is not an https`}},
		{"both tokens", `{server: "https://10.0.0.1:6443", token: K10secret, token-file: /var/t}`, []string{"k3s.config.token: and k3s.config.token-file are both set"}},
		{"token with a space", `{server: "https://10.0.0.1:6443", token: "K10 secret"}`, []string{"k3s.config.token: must be a non-empty string without spaces or quotes"}},
		{"relative token-file", `{server: "https://10.0.0.1:6443", token-file: k3s-token}`, []string{"k3s.config.token-file: k3s-token is not an absolute path"}},
		{"agent-token", `{server: "https://10.0.0.1:6443", token: K10secret, agent-token: x}`, []string{"k3s.config.agent-token: is set on the device by edgeimg-agent"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := Decode(strings.NewReader("name: a\nboard: rpi4\nk3s:\n  role: agent\n  config: "+c.config+"\n"), "agent.yaml")
			if err != nil {
				t.Fatal(err)
			}
			s.SetDefaults(testDefaults)
			err = s.Validate()
			wantErrs(t, err, c.want...)
			if err != nil && strings.Contains(err.Error(), "K10") {
				t.Errorf("the error shows the token: %v", err)
			}
		})
	}
	// A server image still may not set what the fleet's role sets.
	s, err := Decode(strings.NewReader("name: a\nboard: rpi4\nk3s:\n  role: server\n  config: {server: \"https://10.0.0.1:6443\"}\n"), "server.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.SetDefaults(testDefaults)
	wantErrs(t, s.Validate(), "k3s.config.server: is set on the device by edgeimg-agent")
}
