package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/builder/personalize"
)

// PersonalizeOptions are the flags of `edgeimg personalize`.
type PersonalizeOptions struct {
	Token       string
	Hostname    string
	Labels      []string
	WiFiSSID    string
	WiFiPSK     string
	WiFiCountry string
	StaticIP    string
	Interface   string
	Gateway     string
	DNS         []string
}

// AddFlags registers the flags.
func (o *PersonalizeOptions) AddFlags(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&o.Token, "token", "", "fleet enrollment token (edgeimg fleet token create)")
	f.StringVar(&o.Hostname, "hostname", "", "host name and K3s node name of the device (lower-case RFC 1123 label)")
	f.StringArrayVar(&o.Labels, "label", nil, "label KEY=VALUE sent at enrollment and set on the K3s node (repeatable)")
	f.StringVar(&o.WiFiSSID, "wifi-ssid", "", "Wi-Fi network to join (WPA-PSK)")
	f.StringVar(&o.WiFiPSK, "wifi-psk", "", "Wi-Fi passphrase (8 to 63 characters) or 64-hex-digit key")
	f.StringVar(&o.WiFiCountry, "wifi-country", "", "country the device is in, ISO 3166-1 alpha-2 (e.g. DE): the Wi-Fi regulatory domain")
	f.StringVar(&o.StaticIP, "static-ip", "", "static address with its prefix length, e.g. 192.168.10.20/24 (default: DHCP)")
	f.StringVar(&o.Interface, "interface", "", "interface of the static address: eth0 (default) or wlan0")
	f.StringVar(&o.Gateway, "gateway", "", "default gateway of the static address")
	f.StringSliceVar(&o.DNS, "dns", nil, "DNS server of the static address (repeatable, or comma-separated; at most 4)")
}

// Validate checks the flags that go together and returns the settings they make.
func (o *PersonalizeOptions) Validate() (*device.Settings, error) {
	s := &device.Settings{Token: o.Token, Hostname: o.Hostname}
	for _, l := range o.Labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, UsageError{fmt.Errorf("--label %q: want KEY=VALUE", l)}
		}
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		if _, dup := s.Labels[k]; dup {
			return nil, UsageError{fmt.Errorf("--label %q: %s is given twice", l, k)}
		}
		s.Labels[k] = v
	}
	switch {
	case o.WiFiSSID != "":
		s.WiFi = &device.WiFi{SSID: o.WiFiSSID, PSK: o.WiFiPSK, Country: o.WiFiCountry}
	case o.WiFiPSK != "" || o.WiFiCountry != "":
		return nil, UsageError{errors.New("--wifi-psk and --wifi-country need --wifi-ssid")}
	}
	switch {
	case o.StaticIP != "":
		s.Network = &device.Network{Interface: o.Interface, Address: o.StaticIP, Gateway: o.Gateway, DNS: o.DNS}
	case o.Gateway != "" || len(o.DNS) > 0 || o.Interface != "":
		return nil, UsageError{errors.New("--gateway, --dns and --interface need --static-ip")}
	}
	if s.Token == "" && s.Hostname == "" && s.Labels == nil && s.WiFi == nil && s.Network == nil {
		return nil, UsageError{errors.New("nothing to write: give at least one of --token, --hostname, --label, --wifi-ssid, --static-ip")}
	}
	if err := s.Validate(); err != nil {
		return nil, UsageError{fmt.Errorf("device settings: %w", err)}
	}
	return s, nil
}

// NewCmdPersonalize returns `edgeimg personalize`.
func NewCmdPersonalize(_ *globals) *cobra.Command {
	o := &PersonalizeOptions{}
	c := &cobra.Command{
		Use:   "personalize IMAGE [flags]",
		Short: "Write one device's settings (token, host name, Wi-Fi, address) into an image file",
		Long: `personalize writes edgeimg/device.yaml into the config partition (the first FAT partition,
which holds autoboot.txt) of an image made by edgeimg build, replacing any device.yaml there and
keeping every other file as it is. Flash the image afterwards. On first boot the device's agent
imports the settings onto the data partition and removes the token and the Wi-Fi psk from the
card. The file can also be edited on a flashed card by hand.

The image is changed in place, and only once everything has been checked: on any error it is
left as it was. Personalize the raw .img, not the compressed one.`,
		Example: `  edgeimg personalize out/store-gateway-rpi4.img --token edg_… --hostname truck-42 --label truck=42
  edgeimg personalize out/store-gateway-rpi4.img --hostname depot-1 \
      --wifi-ssid depot --wifi-psk '…' --wifi-country DE \
      --static-ip 192.168.10.20/24 --gateway 192.168.10.1 --dns 192.168.10.1`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("personalize takes one argument, the image file; got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.Validate()
			if err != nil {
				return err
			}
			res, err := personalize.Personalize(args[0], s)
			if err != nil {
				return err
			}
			var what []string
			for _, f := range []struct {
				set  bool
				name string
			}{{s.Token != "", "enrollment token"}, {s.Hostname != "", "host name " + s.Hostname}, {len(s.Labels) > 0, fmt.Sprintf("%d label(s)", len(s.Labels))},
				{s.WiFi != nil, "Wi-Fi " + quoteIf(s.WiFi)}, {s.Network != nil, "static address " + addrIf(s.Network)}} {
				if f.set {
					what = append(what, f.name)
				}
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: wrote %s to partition %d (PARTUUID %s): %s; kept %s\n",
				args[0], personalize.SettingsPath, res.Partition, res.PartUUID, strings.Join(what, ", "), strings.Join(res.Kept, ", "))
			return err
		},
	}
	o.AddFlags(c)
	return c
}

func quoteIf(w *device.WiFi) string {
	if w == nil {
		return ""
	}
	return fmt.Sprintf("%q", w.SSID)
}

func addrIf(n *device.Network) string {
	if n == nil {
		return ""
	}
	return n.Address
}
