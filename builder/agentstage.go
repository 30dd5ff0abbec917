package builder

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/edgeimg/edgeimg/builder/rootfs"
	"github.com/edgeimg/edgeimg/builder/spec"
	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/hw"
)

// maxCABundle bounds the size of fleet.ca: a CA bundle is a few kilobytes.
const maxCABundle = 1 << 20

// installAgent installs edgeimg-agent.service in every image and, when the spec has a fleet,
// the fleet's URL, heartbeat and CA bundle (checked: at least one CA certificate, no key).
func installAgent(root *tree.Tree, s *spec.Spec, lay *layout, epoch time.Time) ([]string, error) {
	in := rootfs.AgentInput{ConfigPartUUID: lay.partUUID(hw.RoleConfig), Epoch: epoch}
	if f := s.Fleet; f != nil {
		ca, err := readCABundle(f.CA)
		if err != nil {
			return nil, err
		}
		in.Fleet = &rootfs.Fleet{URL: f.URL, HeartbeatSeconds: f.Heartbeat.Seconds(), CA: ca}
	}
	added, err := rootfs.InstallAgent(root, in)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return added, nil
}

func readCABundle(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("fleet.ca: %w", err)
	}
	defer f.Close()
	ca, err := io.ReadAll(io.LimitReader(f, maxCABundle+1))
	if err != nil {
		return nil, fmt.Errorf("fleet.ca: reading %s: %w", path, err)
	}
	if len(ca) > maxCABundle {
		return nil, fmt.Errorf("fleet.ca: %s is larger than %d bytes: a CA bundle is a few kilobytes", path, maxCABundle)
	}
	if err := rootfs.CheckCABundle(ca); err != nil {
		return nil, fmt.Errorf("fleet.ca: %s %w", path, err)
	}
	return ca, nil
}
