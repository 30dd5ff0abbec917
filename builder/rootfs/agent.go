package rootfs

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// Paths of the agent's files in the system slot.
const (
	AgentUnitName   = "edgeimg-agent.service"
	AgentUnitPath   = "etc/systemd/system/" + AgentUnitName
	FleetConfigPath = "usr/lib/edgeimg/fleet.json"
	FleetCAPath     = "usr/lib/edgeimg/fleet-ca.pem"
)

// AgentInput is what InstallAgent needs. The agent binary itself is installed by Prepare.
type AgentInput struct {
	// ConfigPartUUID is the PARTUUID of the config partition (the first FAT partition, with
	// autoboot.txt and edgeimg/device.yaml), which the agent mounts briefly to import the
	// device settings.
	ConfigPartUUID string
	// Fleet is the fleet the devices enroll with; nil for devices that run K3s standalone.
	Fleet *Fleet
	Epoch time.Time
}

// Fleet is what the image tells the agent about its fleet.
type Fleet struct {
	// URL is the fleet server's https URL.
	URL string
	// HeartbeatSeconds is the heartbeat interval; 0 leaves the agent's default (30 s).
	HeartbeatSeconds int
	// CA is the PEM bundle the agent trusts the fleet server with (see CheckCABundle).
	CA []byte
}

// fleetJSON is /usr/lib/edgeimg/fleet.json, as agent/daemon.LoadFleetConfig reads it.
type fleetJSON struct {
	URL              string `json:"url"`
	HeartbeatSeconds int    `json:"heartbeat_seconds,omitempty"`
}

// InstallAgent installs edgeimg-agent.service, enabled for multi-user.target, and, with a
// fleet, /usr/lib/edgeimg/fleet.json and fleet-ca.pem. It returns the image paths it added.
//
// The unit is offline first: it waits for the data partition (/var), never for the network,
// and is ordered before K3s, which the agent starts itself (standalone until enrolled).
// Without a fleet the agent still imports the device settings and starts K3s as a
// standalone server.
func InstallAgent(t *tree.Tree, in AgentInput) ([]string, error) {
	if in.ConfigPartUUID == "" || strings.ContainsFunc(in.ConfigPartUUID, func(r rune) bool {
		return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r == '-')
	}) {
		return nil, fmt.Errorf("rootfs: config partition PARTUUID %q is not lower-case hex", in.ConfigPartUUID)
	}
	p := prep{t: t, epoch: in.Epoch}
	if f := in.Fleet; f != nil {
		if u, err := url.Parse(f.URL); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("rootfs: fleet URL %q: want https://HOST[:PORT]", f.URL)
		}
		if f.HeartbeatSeconds < 0 {
			return nil, fmt.Errorf("rootfs: fleet heartbeat of %d seconds", f.HeartbeatSeconds)
		}
		if err := CheckCABundle(f.CA); err != nil {
			return nil, err
		}
		js, err := json.MarshalIndent(fleetJSON{URL: f.URL, HeartbeatSeconds: f.HeartbeatSeconds}, "", "  ")
		if err != nil {
			return nil, err
		}
		p.file(FleetConfigPath, 0o644, string(js)+"\n")
		p.file(FleetCAPath, 0o644, string(f.CA))
	}
	p.file(AgentUnitPath, 0o644, AgentUnit(in.ConfigPartUUID))
	p.wants("multi-user.target", AgentUnitName, "/"+AgentUnitPath)
	if p.err != nil {
		return nil, p.err
	}
	return p.added, nil
}

// AgentUnit returns the text of edgeimg-agent.service for the config partition configPartUUID.
func AgentUnit(configPartUUID string) string {
	return `[Unit]
Description=edgeimg agent: device settings, fleet enrollment, K3s role and heartbeats
Documentation=https://github.com/edgeimg/edgeimg
# Offline first: the agent needs the data partition, never the network. It starts K3s
# (standalone until enrolled) and enrolls in the background, with backoff, once the network
# is up. K3s is started by the agent, in the role the fleet assigns.
RequiresMountsFor=/var
After=local-fs.target systemd-tmpfiles-setup.service edgeimg-machine-id.service
Before=k3s.service k3s-agent.service
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart=/usr/local/bin/edgeimg-agent run --config-partuuid ` + configPartUUID + `
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
`
}

// CheckCABundle checks a fleet CA bundle: PEM holding only certificates, each of which
// parses, at least one of them a CA. A private key is refused: it would be on every card.
func CheckCABundle(data []byte) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("is empty: want the PEM certificate of the fleet's CA")
	}
	cas, n := 0, 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if len(bytes.TrimSpace(rest)) > 0 && n == 0 {
				return errors.New("is not PEM: want -----BEGIN CERTIFICATE----- blocks")
			}
			break
		}
		n++
		if strings.Contains(b.Type, "PRIVATE KEY") {
			return fmt.Errorf("holds a private key (PEM block %d, %s): only the CA certificate goes into the image, never its key", n, b.Type)
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %d is a %s: want certificates only", n, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("certificate %d: %w", n, err)
		}
		if c.IsCA && c.BasicConstraintsValid {
			cas++
		}
	}
	if n == 0 {
		return errors.New("holds no PEM block: want the PEM certificate of the fleet's CA")
	}
	if cas == 0 {
		return fmt.Errorf("holds %d certificate(s) but no CA certificate (basic constraints CA:TRUE): give the CA that signed the fleet server's certificate, not the server's own", n)
	}
	return nil
}
