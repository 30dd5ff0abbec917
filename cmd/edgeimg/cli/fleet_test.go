package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
)

// runCLI runs edgeimg in process and returns stdout, stderr and the error.
func runCLI(ctx context.Context, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	c := New("test")
	c.SetArgs(args)
	c.SetOut(&out)
	c.SetErr(&errOut)
	err := c.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// TestFleetCommands runs fleet init and serve, then the admin commands against the server.
func TestFleetCommands(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := runCLI(context.Background(), "fleet", "init", "--dir", dir, "--san", "fleet.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(context.Background(), "fleet", "init", "--dir", dir); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second init: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		_, _, err := runCLI(ctx, "fleet", "serve", "--listen", addr, "--dir", dir)
		served <- err
	}()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	token, _ := os.ReadFile(filepath.Join(dir, "admin-token"))
	t.Setenv("EDGEIMG_FLEET_URL", "https://"+addr)
	t.Setenv("EDGEIMG_ADMIN_TOKEN", strings.TrimSpace(string(token)))
	t.Setenv("EDGEIMG_FLEET_CA", filepath.Join(dir, "ca.pem"))
	var out, errOut string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if out, errOut, err = runCLI(context.Background(), "fleet", "token", "create", "--ttl", "24h", "--uses", "100", "--label", "site=berlin"); err == nil {
			break
		}
	}
	if err != nil || !strings.HasPrefix(out, "edg_") || !strings.Contains(errOut, "100 uses") {
		t.Fatalf("token create: %q %q %v", out, errOut, err)
	}
	out, _, err = runCLI(context.Background(), "fleet", "token", "list", "--json")
	var toks []api.TokenInfo
	if err != nil || json.Unmarshal([]byte(out), &toks) != nil || len(toks) != 1 || toks[0].Labels["site"] != "berlin" || toks[0].UsesLeft != 100 {
		t.Errorf("token list: %q %v", out, err)
	}
	if out, _, err = runCLI(context.Background(), "fleet", "device", "list"); err != nil || !strings.HasPrefix(out, "ID") {
		t.Errorf("device list: %q %v", out, err)
	}
	if _, _, err = runCLI(context.Background(), "fleet", "device", "revoke", "nobody"); err == nil || !strings.Contains(err.Error(), "404 not_found") {
		t.Errorf("revoke unknown: %v", err)
	}
	t.Setenv("EDGEIMG_ADMIN_TOKEN", "wrong-token-wrong-token")
	if _, _, err = runCLI(context.Background(), "fleet", "device", "list"); err == nil || !strings.Contains(err.Error(), "401 unauthorized") {
		t.Errorf("wrong admin token: %v", err)
	}
	if _, _, err = runCLI(context.Background(), "fleet", "token", "create", "--uses", "0"); err == nil || !strings.Contains(err.Error(), "uses") {
		t.Errorf("--uses 0: %v", err)
	}
}
