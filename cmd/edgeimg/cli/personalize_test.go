package cli

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/builder/inspect"
)

// TestPersonalize builds an image and personalizes it with every flag; the device.yaml it
// writes is what the agent parses.
func TestPersonalize(t *testing.T) {
	_, agent := setup(t)
	cleanEnv(t)
	dir := t.TempDir()
	cfg := writeProject(t, dir, "board: rpi4\n")
	if _, stderr, err := execute(t, "build", "-c", cfg, "-o", filepath.Join(dir, "out"), "--agent", agent, "--cache-dir", filepath.Join(dir, "cache")); err != nil {
		t.Fatalf("build: %v\n%s", err, stderr)
	}
	img := filepath.Join(dir, "out", "gw-rpi4.img")
	stdout, _, err := execute(t, "personalize", img, "--token", "edg_secret", "--hostname", "truck-42", "--label", "truck=42", "--label", "site=berlin",
		"--wifi-ssid", "depot", "--wifi-psk", "secretpass", "--wifi-country", "DE",
		"--static-ip", "192.168.10.20/24", "--gateway", "192.168.10.1", "--dns", "192.168.10.1,9.9.9.9")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "wrote edgeimg/device.yaml to partition 1") || strings.Contains(stdout, "edg_secret") || strings.Contains(stdout, "secretpass") {
		t.Errorf("stdout: %s", stdout)
	}
	i, err := inspect.Inspect(img)
	must(t, err)
	s, err := device.ParseSettings([]byte(i.Partitions[0].Config["edgeimg/device.yaml"]))
	must(t, err)
	if s.Token != "edg_secret" || s.Labels["site"] != "berlin" || s.WiFi.Country != "DE" || len(s.Network.DNS) != 2 || s.Network.Gateway != "192.168.10.1" {
		t.Errorf("settings %+v", s)
	}

	// Usage errors leave the image alone and exit 2.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"personalize", img}, "nothing to write"},
		{[]string{"personalize", img, "--wifi-psk", "secretpass"}, "need --wifi-ssid"},
		{[]string{"personalize", img, "--dns", "1.1.1.1"}, "need --static-ip"},
		{[]string{"personalize", img, "--label", "novalue"}, "KEY=VALUE"},
		{[]string{"personalize", img, "--hostname", "Bad_Name"}, "hostname"},
		{[]string{"personalize", img, "--wifi-ssid", "x", "--wifi-psk", "short"}, "wifi.psk"},
		{[]string{"personalize", "--hostname", "a"}, "one argument"},
	} {
		_, _, err := execute(t, c.args...)
		var ue UsageError
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, &ue) {
			t.Errorf("%q: got %v, want a usage error about %q", c.args, err, c.want)
		}
	}
	if _, _, err := execute(t, "personalize", img+".zst", "--hostname", "a"); err == nil || !strings.Contains(err.Error(), "raw .img") {
		t.Errorf("compressed image: %v", err)
	}
}
