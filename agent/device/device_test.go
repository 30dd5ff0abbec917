package device

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestID(t *testing.T) {
	p := Paths{Root: t.TempDir()}
	// No serial: one is generated, kept, and the same the next time.
	id, err := ID(p)
	if err != nil || !strings.HasPrefix(id, "gen-") || len(id) != 20 {
		t.Fatalf("generated id %q, %v", id, err)
	}
	if again, _ := ID(p); again != id {
		t.Errorf("second boot: %q != %q", again, id)
	}
	if got := read(t, p.Path(DeviceIDFile)); got != id+"\n" {
		t.Errorf("device-id file %q", got)
	}
	// The device tree's serial (NUL-terminated, as the kernel gives it) wins.
	write(t, p.Path(DeviceTreeSerial), "10000000C0FFEE42\x00")
	if id, err := ID(p); err != nil || id != "10000000c0ffee42" {
		t.Errorf("serial id %q, %v", id, err)
	}
	write(t, p.Path(DeviceTreeSerial), "0000000000000000\x00") // emulators
	if got, _ := ID(p); got != id {
		t.Errorf("all-zero serial: %q, want the generated %q", got, id)
	}
	write(t, p.Path(DeviceTreeSerial), "../evil\x00")
	if _, err := ID(p); err == nil {
		t.Error("a serial with a slash was accepted")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a/b/file")
	for _, data := range []string{"one", "two"} {
		if err := WriteFileAtomic(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := read(t, path); got != data {
			t.Errorf("%q != %q", got, data)
		}
	}
	fi, _ := os.Stat(path)
	entries, _ := os.ReadDir(filepath.Dir(path))
	if fi.Mode().Perm() != 0o600 || len(entries) != 1 {
		t.Errorf("mode %v, %d entries (temporary files left?)", fi.Mode(), len(entries))
	}
}

const cardYAML = `# settings
token: edg_secret-token
hostname: truck-042
labels:
  site: berlin
  fleet.example.com/truck: "42"
wifi:
  ssid: "depot; yard"
  psk: "correct horse battery"
network:
  address: 192.168.10.20/24
  gateway: 192.168.10.1
  dns: [192.168.10.1, 9.9.9.9]
`

func TestImport(t *testing.T) {
	p := Paths{Root: t.TempDir()}
	card := t.TempDir()
	cardFile := filepath.Join(card, SettingsOnConfig)
	write(t, cardFile, cardYAML)
	s, err := Import(p, card)
	if err != nil {
		t.Fatal(err)
	}
	if s.Token != "edg_secret-token" || s.Hostname != "truck-042" || s.WiFi.PSK != "correct horse battery" || s.Labels["fleet.example.com/truck"] != "42" {
		t.Errorf("settings %+v", s)
	}
	// The secrets left the card, the rest stayed.
	scrubbed := read(t, cardFile)
	for _, secret := range []string{"edg_secret-token", "correct horse"} {
		if strings.Contains(scrubbed, secret) {
			t.Errorf("the card still has %q:\n%s", secret, scrubbed)
		}
	}
	for _, kept := range []string{"hostname: truck-042", "ssid: depot; yard", "192.168.10.20/24", "removed from here"} {
		if !strings.Contains(scrubbed, kept) {
			t.Errorf("the card lost %q:\n%s", kept, scrubbed)
		}
	}
	// The secrets are on the data partition, readable by root only.
	for _, f := range []string{SettingsFile, NMConnections + "/" + WiFiConnection, NMConnections + "/" + EthernetConnection} {
		fi, err := os.Stat(p.Path(f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", f, fi, err)
		}
	}
	wifi := read(t, p.Path(NMConnections+"/"+WiFiConnection))
	eth := read(t, p.Path(NMConnections+"/"+EthernetConnection))
	for _, want := range []string{"type=wifi", "interface-name=wlan0", "ssid=100;101;112;111;116;59;32;121;97;114;100;", "psk=correct horse battery", "[ipv4]\nmethod=auto"} {
		if !strings.Contains(wifi, want) {
			t.Errorf("wifi keyfile has no %q:\n%s", want, wifi)
		}
	}
	for _, want := range []string{"type=ethernet", "interface-name=eth0", "[ipv4]\nmethod=manual\naddress1=192.168.10.20/24,192.168.10.1\ndns=192.168.10.1;9.9.9.9;\n", "[ipv6]\nmethod=auto"} {
		if !strings.Contains(eth, want) {
			t.Errorf("ethernet keyfile has no %q:\n%s", want, eth)
		}
	}

	// Importing the scrubbed card again changes nothing.
	s2, err := Import(p, card)
	if err != nil || s2.Token != s.Token || s2.WiFi.PSK != s.WiFi.PSK || read(t, cardFile) != scrubbed {
		t.Errorf("second import: %+v %v", s2, err)
	}
	// A user edits the card: a new token and another network, without a static address.
	write(t, cardFile, "token: edg_new\nwifi:\n  ssid: other\n  psk: \"12345678\"\n")
	s3, err := Import(p, card)
	if err != nil || s3.Token != "edg_new" || s3.WiFi.SSID != "other" || s3.Hostname != "truck-042" {
		t.Errorf("third import: %+v %v", s3, err)
	}
	// The static address stays (device.yaml did not mention it); the ethernet keyfile too.
	if _, err := os.Stat(p.Path(NMConnections + "/" + EthernetConnection)); err != nil {
		t.Error(err)
	}
	// No card file: the imported settings stay in force.
	os.Remove(cardFile)
	if s4, err := Import(p, card); err != nil || s4.Token != "edg_new" {
		t.Errorf("without device.yaml: %+v %v", s4, err)
	}
}

// TestImportPowerCut: a power cut after the settings are kept but before the card is scrubbed
// leaves the secrets on the card; the next boot imports them again, to the same result.
func TestImportPowerCut(t *testing.T) {
	p := Paths{Root: t.TempDir()}
	card := t.TempDir()
	write(t, filepath.Join(card, SettingsOnConfig), cardYAML)
	first, err := Import(p, card)
	if err != nil {
		t.Fatal(err)
	}
	kept := read(t, p.Path(SettingsFile))
	write(t, filepath.Join(card, SettingsOnConfig), cardYAML) // as if the scrub never happened
	again, err := Import(p, card)
	if err != nil || read(t, p.Path(SettingsFile)) != kept || again.Token != first.Token {
		t.Errorf("re-import: %v", err)
	}
}

func TestParseSettingsRefusals(t *testing.T) {
	for yaml, want := range map[string]string{
		"tokn: x\n":                                             "field tokn not found",
		"hostname: Truck_1\n":                                   "hostname",
		"wifi:\n  ssid: x\n  psk: short\n":                      "wifi.psk",
		"network:\n  address: 10.0.0.1\n":                       "network.address",
		"network:\n  address: 10.0.0.1/8\n  gateway: ::1\n":     "network.gateway",
		"network:\n  interface: wlan0\n  address: 10.0.0.1/8\n": "needs wifi",
		"labels:\n  'a b': c\n":                                 "label key",
		"hostname: a\n---\nhostname: b\n":                       "more than one",
	} {
		if _, err := ParseSettings([]byte(yaml)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", yaml, err, want)
		}
	}
}

func FuzzParseSettings(f *testing.F) {
	f.Add([]byte(cardYAML))
	f.Add([]byte("wifi: {ssid: a, psk: 0123456789012345678901234567890123456789012345678901234567890123}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSettings(data)
		if err != nil {
			return
		}
		// Accepted settings render into keyfiles without panicking and validate again.
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
		if s.WiFi != nil {
			_ = keyfile("edgeimg-wifi", "wifi", "wlan0", s.WiFi, s.Network)
		}
		if s.Network != nil {
			_ = keyfile("edgeimg-eth0", "ethernet", "eth0", nil, s.Network)
		}
	})
}
