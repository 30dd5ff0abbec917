package apply

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the device side of OTA small and free of builder code: it may use the
// standard library, the board packages, the bundle format and the tree types boards use.
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
		"github.com/edgeimg/edgeimg/ota/apply":    true,
		"github.com/edgeimg/edgeimg/ota/bundle":   true,
		"github.com/edgeimg/edgeimg/hw":           true,
		"github.com/edgeimg/edgeimg/hw/rpi4":      true,
		"github.com/edgeimg/edgeimg/builder/tree": true, // hw.Board's boot files; standard library only
	}
	for _, p := range strings.Fields(string(out)) {
		if !allowed[p] {
			t.Errorf("ota/apply depends on %s", p)
		}
	}
}
