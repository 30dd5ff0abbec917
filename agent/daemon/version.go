package daemon

import (
	"encoding/json"
	"os"

	"github.com/edgeimg/edgeimg/agent/device"
)

// ReleaseFile is the image's release description, written by the builder.
const ReleaseFile = "usr/lib/edgeimg/release.json"

// ImageVersion is the version the device reports to the fleet: the release version of the
// image it runs (what updates compare), from ReleaseFile; fallback when the file is missing
// or unreadable (an agent run outside an edgeimg image).
func ImageVersion(p device.Paths, fallback string) string {
	b, err := os.ReadFile(p.Path(ReleaseFile))
	if err != nil {
		return fallback
	}
	var r struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &r) != nil || r.Version == "" {
		return fallback
	}
	return r.Version
}
