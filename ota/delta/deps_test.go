package delta

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the delta download, which runs on the device, free of builder and server
// code: the standard library, the bundle format, the fleet's wire types and the chunker.
func TestDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{
		"github.com/edgeimg/edgeimg/ota/delta":  true,
		"github.com/edgeimg/edgeimg/ota/bundle": true,
		"github.com/edgeimg/edgeimg/fleet/api":  true,
		"github.com/restic/chunker":             true,
	}
	for _, p := range strings.Fields(string(out)) {
		if !allowed[p] {
			t.Errorf("ota/delta depends on %s", p)
		}
	}
}
