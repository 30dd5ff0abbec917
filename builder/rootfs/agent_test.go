package rootfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/daemon"
	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/fleet/pki"
)

// fleetPKI makes a CA, server certificate and key as `edgeimg fleet init` does.
func fleetPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	must(t, pki.Init(dir, []string{"fleet.example.com"}, time.Now()))
	return dir
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return b
}

func TestInstallAgent(t *testing.T) {
	ca := readFile(t, filepath.Join(fleetPKI(t), pki.CAFile))
	tr := tree.New()
	added, err := InstallAgent(tr, AgentInput{ConfigPartUUID: "5eed1e55-01", Epoch: epoch,
		Fleet: &Fleet{URL: "https://fleet.example.com:8443", HeartbeatSeconds: 45, CA: ca}})
	must(t, err)
	want := []string{"/" + FleetConfigPath, "/" + FleetCAPath, "/" + AgentUnitPath, "/etc/systemd/system/multi-user.target.wants/edgeimg-agent.service"}
	if strings.Join(added, " ") != strings.Join(want, " ") {
		t.Errorf("added %v, want %v", added, want)
	}
	unit := read(t, tr, AgentUnitPath)
	for _, l := range []string{
		"ExecStart=/usr/local/bin/edgeimg-agent run --config-partuuid 5eed1e55-01\n",
		"Before=k3s.service k3s-agent.service\n", "Restart=always\n", "RestartSec=5\n",
		"WantedBy=multi-user.target\n", "RequiresMountsFor=/var\n",
	} {
		if !strings.Contains(unit, l) {
			t.Errorf("unit lacks %q:\n%s", l, unit)
		}
	}
	if strings.Contains(unit, "network-online") || strings.Contains(unit, "network.target") {
		t.Errorf("the unit waits for the network:\n%s", unit)
	}
	if e := tr.Get("etc/systemd/system/multi-user.target.wants/edgeimg-agent.service"); e == nil || e.Kind != tree.Symlink || e.Linkname != "/"+AgentUnitPath {
		t.Errorf("enablement symlink: %+v", e)
	}
	for _, p := range []string{FleetConfigPath, FleetCAPath, AgentUnitPath} {
		if e := tr.Get(p); e.Mode != 0o644 || !e.ModTime.Equal(epoch) || e.UID != 0 {
			t.Errorf("%s: mode %o, mtime %v, uid %d", p, e.Mode, e.ModTime, e.UID)
		}
	}

	// The agent reads what the builder wrote.
	root := t.TempDir()
	for _, p := range []string{FleetConfigPath, FleetCAPath} {
		must(t, os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755))
		must(t, os.WriteFile(filepath.Join(root, p), []byte(read(t, tr, p)), 0o644))
	}
	fc, gotCA, err := daemon.LoadFleetConfig(device.Paths{Root: root})
	must(t, err)
	if fc.URL != "https://fleet.example.com:8443" || fc.HeartbeatSeconds != 45 || string(gotCA) != string(ca) {
		t.Errorf("the agent reads %+v and a CA of %d bytes", fc, len(gotCA))
	}
	if FleetConfigPath != device.FleetConfig || FleetCAPath != device.FleetCA {
		t.Errorf("paths differ from the agent's: %s %s", device.FleetConfig, device.FleetCA)
	}
}

func TestInstallAgentStandalone(t *testing.T) {
	tr := tree.New()
	added, err := InstallAgent(tr, AgentInput{ConfigPartUUID: "5eed1e55-01", Epoch: epoch})
	must(t, err)
	if len(added) != 2 || tr.Get(FleetConfigPath) != nil || tr.Get(FleetCAPath) != nil {
		t.Errorf("without a fleet: added %v", added)
	}
	if !strings.Contains(read(t, tr, AgentUnitPath), "--config-partuuid 5eed1e55-01") {
		t.Error("no unit")
	}
	if _, err := InstallAgent(tree.New(), AgentInput{ConfigPartUUID: "5EED1E55-01"}); err == nil {
		t.Error("upper-case PARTUUID accepted")
	}
}

func TestCheckCABundle(t *testing.T) {
	dir := fleetPKI(t)
	ca := readFile(t, filepath.Join(dir, pki.CAFile))
	chain := readFile(t, filepath.Join(dir, pki.ServerFile)) // the server's certificate, then the CA's
	server := chain[:strings.Index(string(chain), "-----END CERTIFICATE-----\n")+len("-----END CERTIFICATE-----\n")]
	key := readFile(t, filepath.Join(dir, pki.CAKeyFile))
	must(t, CheckCABundle(ca))
	must(t, CheckCABundle(chain))
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "is empty"},
		{"not PEM", []byte("hello\n"), "is not PEM"},
		{"server certificate only", server, "no CA certificate"},
		{"CA with its key", append(append([]byte{}, ca...), key...), "private key"},
		{"a CSR", []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), "is a CERTIFICATE REQUEST"},
		{"corrupt certificate", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "certificate 1:"},
	} {
		err := CheckCABundle(c.data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := InstallAgent(tree.New(), AgentInput{ConfigPartUUID: "5eed1e55-01", Fleet: &Fleet{URL: "https://f", CA: server}}); err == nil {
		t.Error("InstallAgent took a bundle without a CA")
	}
}
