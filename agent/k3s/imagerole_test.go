package k3s

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/fleet/api"
)

func TestImageRole(t *testing.T) {
	for _, c := range []struct {
		name, info, config string
		want               api.Role
		err                string
	}{
		{name: "no K3s", want: api.Role{Kind: api.RoleServer}},
		{name: "no role", info: `{"version": "v1.31.4+k3s1"}`, want: api.Role{Kind: api.RoleServer}},
		{name: "server", info: `{"role": "server"}`, config: "server: https://10.0.0.1:6443\n", want: api.Role{Kind: api.RoleServer}},
		{name: "agent", info: `{"role": "agent"}`, config: "server: https://10.0.0.1:6443\ntoken: K10x\n", want: api.Role{Kind: api.RoleAgent, ServerURL: "https://10.0.0.1:6443"}},
		{name: "agent with token-file", info: `{"role": "agent"}`, config: "server: https://10.0.0.1:6443\ntoken-file: /var/lib/edgeimg/k3s-token\n", want: api.Role{Kind: api.RoleAgent, ServerURL: "https://10.0.0.1:6443"}},
		{name: "agent without token", info: `{"role": "agent"}`, config: "server: https://10.0.0.1:6443\n", err: "no https server and token"},
		{name: "agent without config", info: `{"role": "agent"}`, err: "no https server and token"},
		{name: "agent with http", info: `{"role": "agent"}`, config: "server: http://10.0.0.1:6443\ntoken: x\n", err: "no https server"},
		{name: "bad role", info: `{"role": "worker"}`, err: `role "worker" is not server or agent`},
		{name: "corrupt", info: `{"role": `, err: "k3s.json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := device.Paths{Root: t.TempDir()}
			for rel, data := range map[string]string{device.K3sInfo: c.info, device.K3sImageConfig: c.config} {
				if data == "" {
					continue
				}
				os.MkdirAll(filepath.Dir(p.Path(rel)), 0o755)
				if err := os.WriteFile(p.Path(rel), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ImageRole(p)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("ImageRole = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}
