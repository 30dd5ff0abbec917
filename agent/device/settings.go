package device

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/edgeimg/edgeimg/fleet/api"
)

// Settings are the per-device settings: edgeimg/device.yaml on the config partition, which a
// user can edit after flashing (or `edgeimg personalize` writes), imported by the agent onto
// the data partition.
type Settings struct {
	// Token is the fleet enrollment token; removed from the config partition once imported.
	Token string `yaml:"token,omitempty" json:"token,omitempty"`
	// Hostname is the device's host name and K3s node name.
	Hostname string `yaml:"hostname,omitempty" json:"hostname,omitempty"`
	// Labels are sent at enrollment and become K3s node labels.
	Labels map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
	// WiFi is the wireless network to join.
	WiFi *WiFi `yaml:"wifi,omitempty" json:"wifi,omitempty"`
	// Network is a static IPv4 configuration; without it the interfaces use DHCP.
	Network *Network `yaml:"network,omitempty" json:"network,omitempty"`
}

// WiFi is a WPA-PSK network.
type WiFi struct {
	SSID string `yaml:"ssid" json:"ssid"`
	// PSK is the passphrase (8–63 characters) or the 64-hex-digit key; removed from the config
	// partition once imported.
	PSK string `yaml:"psk,omitempty" json:"psk,omitempty"`
	// Country is the ISO 3166-1 alpha-2 code of the country the device is in (e.g. DE), which
	// sets the Wi-Fi regulatory domain (the channels and power allowed there).
	Country string `yaml:"country,omitempty" json:"country,omitempty"`
}

// Network is a static address on one interface.
type Network struct {
	// Interface is eth0 (default) or wlan0.
	Interface string `yaml:"interface,omitempty" json:"interface,omitempty"`
	// Address is an IPv4 or IPv6 address with its prefix length, e.g. 192.168.10.20/24.
	Address string   `yaml:"address" json:"address"`
	Gateway string   `yaml:"gateway,omitempty" json:"gateway,omitempty"`
	DNS     []string `yaml:"dns,omitempty" json:"dns,omitempty"`
}

// MaxSettingsBytes limits device.yaml.
const MaxSettingsBytes = 64 << 10

// ParseSettings parses device.yaml strictly (unknown keys are errors) and validates it.
func ParseSettings(data []byte) (*Settings, error) {
	if len(data) > MaxSettingsBytes {
		return nil, fmt.Errorf("larger than %d bytes", MaxSettingsBytes)
	}
	var s Settings
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Validate checks the settings, naming the field that is wrong.
func (s *Settings) Validate() error {
	if len(s.Token) > 256 || strings.ContainsFunc(s.Token, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return errors.New("token: at most 256 printable characters without spaces")
	}
	if err := api.ValidHostname(s.Hostname); err != nil {
		return err
	}
	if err := api.ValidLabels(s.Labels); err != nil {
		return err
	}
	if w := s.WiFi; w != nil {
		if w.SSID == "" || len(w.SSID) > 32 || strings.ContainsFunc(w.SSID, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return fmt.Errorf("wifi.ssid %q: must be 1 to 32 bytes without control characters", w.SSID)
		}
		if w.PSK != "" && !validPSK(w.PSK) {
			return errors.New("wifi.psk: must be 8 to 63 printable ASCII characters, or 64 hex digits")
		}
		if w.Country != "" && (len(w.Country) != 2 || strings.Trim(w.Country, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "") {
			return fmt.Errorf("wifi.country %q: want an ISO 3166-1 alpha-2 code in capitals, e.g. DE or US", w.Country)
		}
	}
	if n := s.Network; n != nil {
		if n.Interface != "" && n.Interface != "eth0" && n.Interface != "wlan0" {
			return fmt.Errorf("network.interface %q: must be eth0 or wlan0", n.Interface)
		}
		if n.Interface == "wlan0" && s.WiFi == nil {
			return errors.New("network.interface wlan0: needs wifi")
		}
		pfx, err := netip.ParsePrefix(n.Address)
		if err != nil || pfx.Addr().IsUnspecified() {
			return fmt.Errorf("network.address %q: want an address with its prefix length, e.g. 192.168.10.20/24", n.Address)
		}
		if n.Gateway != "" {
			gw, err := netip.ParseAddr(n.Gateway)
			if err != nil || gw.Is4() != pfx.Addr().Is4() {
				return fmt.Errorf("network.gateway %q: want an address of the same family as network.address", n.Gateway)
			}
		}
		if len(n.DNS) > 4 {
			return errors.New("network.dns: at most 4 servers")
		}
		for _, d := range n.DNS {
			if _, err := netip.ParseAddr(d); err != nil {
				return fmt.Errorf("network.dns %q: not an IP address", d)
			}
		}
	}
	return nil
}

func validPSK(p string) bool {
	if len(p) == 64 {
		for _, c := range p {
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
		return true
	}
	if len(p) < 8 || len(p) > 63 {
		return false
	}
	for _, c := range p {
		if c < ' ' || c > '~' {
			return false
		}
	}
	return true
}

// LoadSettings reads the imported settings from the data partition (empty if none).
func LoadSettings(p Paths) (*Settings, error) {
	b, err := os.ReadFile(p.Path(SettingsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &Settings{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the device settings: %w", err)
	}
	var s Settings
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Path(SettingsFile), err)
	}
	return &s, nil
}

// Import reads edgeimg/device.yaml from configDir (the mounted config partition), merges it
// over the settings already imported (fields it sets win; a Wi-Fi entry without its psk keeps
// the imported psk of the same network), keeps the result on the data partition (0600),
// writes the NetworkManager keyfiles, and then rewrites device.yaml without the token and the
// Wi-Fi psk. Each step is atomic and the order makes a power cut at any point harmless: the
// secrets leave the config partition only once they are safe on the data partition, and
// importing again gives the same result. It returns the settings in force.
func Import(p Paths, configDir string) (*Settings, error) {
	stored, err := LoadSettings(p)
	if err != nil {
		return nil, err
	}
	src := filepath.Join(configDir, SettingsOnConfig)
	data, err := os.ReadFile(src)
	if errors.Is(err, fs.ErrNotExist) {
		return stored, WriteNetwork(p, stored)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", src, err)
	}
	card, err := ParseSettings(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	merged := merge(stored, card)
	if err := merged.Validate(); err != nil {
		return nil, fmt.Errorf("%s with the imported settings: %w", src, err)
	}
	js, err := json.MarshalIndent(merged, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(p.Path(SettingsFile), append(js, '\n'), 0o600); err != nil {
		return nil, err
	}
	if err := WriteNetwork(p, merged); err != nil {
		return nil, err
	}
	if card.Token == "" && (card.WiFi == nil || card.WiFi.PSK == "") {
		return merged, nil // nothing secret on the card
	}
	scrubbed := *card
	scrubbed.Token = ""
	if card.WiFi != nil {
		w := *card.WiFi
		w.PSK = ""
		scrubbed.WiFi = &w
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&scrubbed); err != nil {
		return nil, err
	}
	out := buf.Bytes()
	header := "# edgeimg device settings. The enrollment token and the Wi-Fi psk were imported onto the\n" +
		"# device and removed from here; add new ones to change them.\n"
	if string(out) == "{}\n" {
		out = nil
	}
	if err := WriteFileAtomic(src, append([]byte(header), out...), 0o644); err != nil {
		return nil, fmt.Errorf("removing the secrets from %s: %w", src, err)
	}
	return merged, nil
}

func merge(stored, card *Settings) *Settings {
	m := *stored
	if card.Token != "" {
		m.Token = card.Token
	}
	if card.Hostname != "" {
		m.Hostname = card.Hostname
	}
	if card.Labels != nil {
		m.Labels = maps.Clone(card.Labels)
	}
	if card.WiFi != nil {
		w := *card.WiFi
		if w.PSK == "" && stored.WiFi != nil && stored.WiFi.SSID == w.SSID {
			w.PSK = stored.WiFi.PSK
		}
		m.WiFi = &w
	}
	if card.Network != nil {
		n := *card.Network
		n.DNS = slices.Clone(n.DNS)
		m.Network = &n
	}
	return &m
}

// Keyfile names written by WriteNetwork.
const (
	WiFiConnection     = "edgeimg-wifi.nmconnection"
	EthernetConnection = "edgeimg-eth0.nmconnection"
)

// WriteNetwork writes NetworkManager keyfiles (0600) for the Wi-Fi network and the static
// address, and removes the ones the settings no longer ask for. Without a static address on
// eth0, NetworkManager's default DHCP connection applies there.
func WriteNetwork(p Paths, s *Settings) error {
	dir := p.Path(NMConnections)
	files := map[string][]byte{}
	if s.WiFi != nil && s.WiFi.PSK != "" {
		var static *Network
		if s.Network != nil && s.Network.Interface == "wlan0" {
			static = s.Network
		}
		files[WiFiConnection] = keyfile("edgeimg-wifi", "wifi", "wlan0", s.WiFi, static)
	}
	if s.Network != nil && s.Network.Interface != "wlan0" {
		files[EthernetConnection] = keyfile("edgeimg-eth0", "ethernet", "eth0", nil, s.Network)
	}
	for _, name := range []string{WiFiConnection, EthernetConnection} {
		path := filepath.Join(dir, name)
		data, ok := files[name]
		if !ok {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("removing %s: %w", path, err)
			}
			continue
		}
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			continue
		}
		if err := WriteFileAtomic(path, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// keyfile renders a NetworkManager keyfile. Values are escaped as GKeyFile wants them.
func keyfile(id, typ, iface string, w *WiFi, n *Network) []byte {
	sum := sha256.Sum256([]byte("edgeimg/" + id))
	sum[6] = sum[6]&0x0f | 0x40
	sum[8] = sum[8]&0x3f | 0x80
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by edgeimg-agent from edgeimg/device.yaml.\n[connection]\nid=%s\nuuid=%s\ntype=%s\ninterface-name=%s\nautoconnect=true\n\n", id, uuid, typ, iface)
	if w != nil {
		fmt.Fprintf(&b, "[wifi]\nmode=infrastructure\nssid=%s\n\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=%s\n\n", ssid(w.SSID), escape(w.PSK))
	}
	if n != nil {
		pfx := netip.MustParsePrefix(n.Address)
		fam, other := "ipv4", "ipv6"
		if pfx.Addr().Is6() {
			fam, other = "ipv6", "ipv4"
		}
		fmt.Fprintf(&b, "[%s]\nmethod=manual\naddress1=%s", fam, n.Address)
		if n.Gateway != "" {
			b.WriteString("," + n.Gateway)
		}
		b.WriteString("\n")
		if len(n.DNS) > 0 {
			b.WriteString("dns=" + strings.Join(n.DNS, ";") + ";\n")
		}
		fmt.Fprintf(&b, "\n[%s]\nmethod=auto\n", other)
	} else {
		b.WriteString("[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n")
	}
	return []byte(b.String())
}

// ssid writes an SSID as a string, or as NetworkManager's list of bytes ("65;66;") when it
// has a ';', which the string form would split.
func ssid(s string) string {
	if !strings.Contains(s, ";") {
		return escape(s)
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%d;", s[i])
	}
	return b.String()
}

// escape escapes a GKeyFile value: backslash, leading space, and control characters.
func escape(s string) string {
	var b strings.Builder
	for i, c := range s {
		switch {
		case c == '\\':
			b.WriteString(`\\`)
		case c == ' ' && i == 0:
			b.WriteString(`\s`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\r':
			b.WriteString(`\r`)
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}
