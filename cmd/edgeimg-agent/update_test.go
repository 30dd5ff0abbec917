package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/agent/ota"
)

func TestUpdateStatus(t *testing.T) {
	root := t.TempDir()
	if out, errOut, code := execute(t, "update", "status", "--root", root); code != 0 || out != "no update yet\n" {
		t.Fatalf("no update: %q %q %d", out, errOut, code)
	}
	p := filepath.Join(root, ota.StateFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(`{"version":"2","phase":"failed","slot":"b","from":"a","reason":"health timeout","detail":"K3s not healthy"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := execute(t, "update", "status", "--root", root)
	if code != 0 || !strings.Contains(out, `"phase": "failed"`) || !strings.Contains(out, `"reason": "health timeout"`) {
		t.Fatalf("status: %q %q %d", out, errOut, code)
	}
	if err := os.WriteFile(p, []byte(`{`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := execute(t, "update", "status", "--root", root); code != 1 || !strings.Contains(errOut, "state.json") {
		t.Fatalf("broken state: %q %d", errOut, code)
	}
}
