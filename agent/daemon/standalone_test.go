package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/k3s"
	"github.com/edgeimg/edgeimg/agent/k3s/k3stest"
)

// TestStandalone: an image without a fleet (no fleet.json), or with broken fleet settings,
// still imports the device settings and runs K3s as a standalone server, and never enrolls.
func TestStandalone(t *testing.T) {
	for _, c := range []struct {
		name  string
		files map[string]string
		log   string
	}{
		{"no fleet", nil, "no fleet configured"},
		{"fleet without its CA", map[string]string{device.FleetConfig: `{"url": "https://127.0.0.1:1"}`}, "reading the fleet CA"},
		{"fleet with a bad CA", map[string]string{device.FleetConfig: `{"url": "https://127.0.0.1:1"}`, device.FleetCA: "not PEM\n"}, "the fleet CA holds no PEM certificate"},
		{"corrupt fleet.json", map[string]string{device.FleetConfig: `{"url": `}, "ignoring the image's fleet settings"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := device.Paths{Root: t.TempDir()}
			card := t.TempDir()
			files := map[string]string{
				device.DeviceTreeSerial:                      "10000000c0ffee42\x00",
				device.K3sInfo:                               `{"version": "v1.31.4+k3s1"}`,
				filepath.Join(card, device.SettingsOnConfig): "token: abc\nhostname: truck-7\n",
			}
			for k, v := range c.files {
				files[k] = v
			}
			for path, data := range files {
				if !filepath.IsAbs(path) {
					path = p.Path(path)
				}
				must(t, os.MkdirAll(filepath.Dir(path), 0o755))
				must(t, os.WriteFile(path, []byte(data), 0o644))
			}
			r := &k3stest.Recorder{}
			var logs logBuf
			stop := runAgent(testConfig(p, card, r, &logs))
			waitFor(t, "standalone K3s", func() bool { return slices.Contains(r.Calls(), "systemctl start "+k3s.ServerUnit) })
			must(t, stop())
			if !strings.Contains(logs.String(), c.log) {
				t.Errorf("log lacks %q:\n%s", c.log, logs.String())
			}
			s, err := device.LoadSettings(p)
			must(t, err)
			if s.Hostname != "truck-7" || s.Token != "abc" {
				t.Errorf("settings not imported: %+v", s)
			}
			if b, _ := os.ReadFile(filepath.Join(card, device.SettingsOnConfig)); strings.Contains(string(b), "abc") {
				t.Errorf("the token stays on the card:\n%s", b)
			}
			if _, err := os.Stat(p.Path(device.EnrollmentFile)); err == nil {
				t.Error("enrolled without a fleet")
			}
			a, err := k3s.LoadApplied(p)
			must(t, err)
			if a == nil || a.Role.Kind != "server" || !a.Provisional {
				t.Errorf("applied role %+v, want a provisional server", a)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestNetworkApplied: Wi-Fi settings unblock the radio in the card's country and make
// NetworkManager read the keyfiles, before K3s starts.
func TestNetworkApplied(t *testing.T) {
	p := device.Paths{Root: t.TempDir()}
	must(t, os.MkdirAll(filepath.Dir(p.Path(device.K3sInfo)), 0o755))
	must(t, os.WriteFile(p.Path(device.K3sInfo), []byte(`{"version": "v1.31.4+k3s1"}`), 0o644))
	card := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(card, "edgeimg"), 0o755))
	must(t, os.WriteFile(filepath.Join(card, device.SettingsOnConfig), []byte("wifi: {ssid: depot, psk: secretpass, country: DE}\n"), 0o644))
	r := &k3stest.Recorder{}
	var logs logBuf
	stop := runAgent(testConfig(p, card, r, &logs))
	waitFor(t, "standalone K3s", func() bool { return slices.Contains(r.Calls(), "systemctl start "+k3s.ServerUnit) })
	must(t, stop())
	calls := r.Calls()
	if want := []string{"iw reg set DE", "rfkill unblock wifi", "nmcli connection reload"}; !slices.Equal(calls[:min(3, len(calls))], want) {
		t.Errorf("runner calls %q, want them to start with %q", calls, want)
	}
	if _, err := os.Stat(p.Path(device.NMConnections + "/" + device.WiFiConnection)); err != nil {
		t.Error(err)
	}
}
