package builder

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeimg/edgeimg/builder/sbom"
	"github.com/edgeimg/edgeimg/builder/spec"
	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/hw"
)

// dpkgStatus is where Debian keeps its package database in the base's root filesystem.
const dpkgStatus = "var/lib/dpkg/status"

// makeSBOM describes the image for a security review: the base's Debian packages (read from
// its dpkg status before the root filesystem is changed), and what edgeimg adds. A base without
// a dpkg database gives a warning, not an error.
// extra are further components (the K3s stage's: k3s and every image).
func makeSBOM(root *tree.Tree, s *spec.Spec, board hw.Board, src *baseSource, agent *agentBinary, epoch time.Time, version string, extra ...sbom.Component) (*sbom.Document, []string, error) {
	var warnings []string
	var pkgs []sbom.Package
	if b, err := root.ReadFile(dpkgStatus); err != nil {
		warnings = append(warnings, fmt.Sprintf("/%s: not in the base image, so the SBOM lists no base packages", dpkgStatus))
	} else if pkgs, err = sbom.ParseDpkgStatus(bytes.NewReader(b)); err != nil {
		return nil, nil, fmt.Errorf("base image %s: /%s: %w", src.Name, dpkgStatus, err)
	}
	in := sbom.Input{
		Name: s.Name, Board: board.Name(), Version: s.Version, Builder: version, Epoch: epoch,
		BaseName: sbomSourceName(src.Name), BaseSHA256: src.SourceSHA256, Distro: osID(root), Packages: pkgs,
		Components: []sbom.Component{{
			Name: "edgeimg-agent", Version: version, SHA256: agent.SHA256,
			PURL:     "pkg:golang/github.com/edgeimg/edgeimg/cmd/edgeimg-agent@" + version,
			Supplier: "Organization: edgeimg",
		}},
	}
	in.Components = append(in.Components, extra...)
	return sbom.New(in), warnings, nil
}

// sbomSourceName names the base in the SBOM: a URL as it is, a local file by its base name
// only, so the document does not depend on (or reveal) the build machine's directories.
func sbomSourceName(name string) string {
	if strings.Contains(name, "://") {
		return name
	}
	return filepath.Base(name)
}

// osID returns the ID= of the base's os-release ("debian", "raspbian"), or "" if unknown.
func osID(root *tree.Tree) string {
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		b, err := root.ReadFile(p)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "ID="); ok {
				return strings.Trim(v, `"'`)
			}
		}
	}
	return ""
}
