package builder

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/pki"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

// TestBuildFleet builds an image with a fleet: the agent's unit is installed and enabled, and
// the fleet's URL, heartbeat and CA are where the agent reads them.
func TestBuildFleet(t *testing.T) {
	testutil.NeedTool(t, "debugfs")
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "pki"), 0o755))
	must(t, pki.Init(filepath.Join(dir, "pki"), []string{"fleet.example.com"}, time.Unix(testEpoch, 0)))
	res, err := build(t, dir, "fleet:\n  url: https://fleet.example.com:8443\n  ca: pki/ca.pem\n  heartbeat: 45s\n")
	must(t, err)

	var tbl sfdiskTable
	must(t, json.Unmarshal([]byte(testutil.Run(t, "sfdisk", "--json", res.Image)), &tbl))
	sig := strings.TrimPrefix(tbl.PartitionTable.ID, "0x")
	p5 := tbl.PartitionTable.Partitions[4]
	sys := extract(t, res.Image, p5.Start*512, p5.Size*512)
	cat := func(p string) string {
		out, err := exec.Command(testutil.NeedTool(t, "debugfs"), "-R", "cat "+p, sys).Output() // stdout only: no banner
		must(t, err)
		return string(out)
	}

	unit := cat("/etc/systemd/system/edgeimg-agent.service")
	for _, want := range []string{"ExecStart=/usr/local/bin/edgeimg-agent run --config-partuuid " + sig + "-01\n", "Before=k3s.service k3s-agent.service\n", "Restart=always\n"} {
		if !strings.Contains(unit, want) {
			t.Errorf("edgeimg-agent.service lacks %q:\n%s", want, unit)
		}
	}
	if s := testutil.Run(t, "debugfs", "-R", "stat /etc/systemd/system/multi-user.target.wants/edgeimg-agent.service", sys); !strings.Contains(s, "Type: symlink") || !strings.Contains(s, `Fast link dest: "/etc/systemd/system/edgeimg-agent.service"`) {
		t.Errorf("edgeimg-agent.service is not enabled:\n%s", s)
	}
	var fc struct {
		URL              string `json:"url"`
		HeartbeatSeconds int    `json:"heartbeat_seconds"`
	}
	must(t, json.Unmarshal([]byte(cat("/usr/lib/edgeimg/fleet.json")), &fc))
	if fc.URL != "https://fleet.example.com:8443" || fc.HeartbeatSeconds != 45 {
		t.Errorf("fleet.json: %+v", fc)
	}
	ca, err := os.ReadFile(filepath.Join(dir, "pki/ca.pem"))
	must(t, err)
	if got := cat("/usr/lib/edgeimg/fleet-ca.pem"); got != string(ca) {
		t.Errorf("fleet-ca.pem differs from fleet.ca:\n%s", got)
	}
	rel := cat("/usr/lib/edgeimg/release.json")
	for _, p := range []string{"/usr/lib/edgeimg/fleet.json", "/usr/lib/edgeimg/fleet-ca.pem", "/etc/systemd/system/edgeimg-agent.service"} {
		if !strings.Contains(rel, `"`+p+`"`) {
			t.Errorf("release.json does not list %s among the additions", p)
		}
	}
}

// TestBuildFleetBadCA: a CA bundle that is missing, holds no CA certificate or holds a key
// stops the build with an error naming fleet.ca and the file, and leaves no output.
func TestBuildFleetBadCA(t *testing.T) {
	pkiDir := t.TempDir()
	must(t, pki.Init(pkiDir, nil, time.Unix(testEpoch, 0)))
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(pkiDir, name))
		must(t, err)
		return string(b)
	}
	for _, c := range []struct{ name, content, want string }{
		{"missing", "", "no such file"},
		{"server certificate", strings.SplitAfter(read(pki.ServerFile), "-----END CERTIFICATE-----\n")[0], "no CA certificate"},
		{"with key", read(pki.CAFile) + read(pki.CAKeyFile), "private key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ca := filepath.Join(dir, "bundle.pem")
			if c.content != "" {
				must(t, os.WriteFile(ca, []byte(c.content), 0o644))
			}
			_, err := build(t, dir, "fleet: {url: 'https://fleet.example.com', ca: bundle.pem}\n")
			if err == nil {
				t.Fatal("build succeeded")
			}
			if msg := err.Error(); !strings.Contains(msg, "fleet.ca") || !strings.Contains(msg, ca) || !strings.Contains(msg, c.want) {
				t.Errorf("error %q does not name fleet.ca, %s and %q", msg, ca, c.want)
			}
			if entries, _ := os.ReadDir(filepath.Join(dir, "out")); len(entries) != 0 {
				t.Errorf("left %d entries in the output directory", len(entries))
			}
		})
	}
}
