package daemon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeimg/edgeimg/agent/device"
)

func TestImageVersion(t *testing.T) {
	p := device.Paths{Root: t.TempDir()}
	if got := ImageVersion(p, "agent-dev"); got != "agent-dev" {
		t.Errorf("no release file: %q", got)
	}
	f := p.Path(ReleaseFile)
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ body, want string }{
		{`{"name": "gw", "version": "2.1"}`, "2.1"},
		{`{"name": "gw"}`, "agent-dev"},
		{`not json`, "agent-dev"},
	} {
		if err := os.WriteFile(f, []byte(c.body), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := ImageVersion(p, "agent-dev"); got != c.want {
			t.Errorf("%s: %q, want %q", c.body, got, c.want)
		}
	}
}
