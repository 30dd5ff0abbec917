package cli

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestProfileListener: Go's profiles are served on loopback addresses only, on their own mux.
func TestProfileListener(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", ":6060", "192.0.2.1:6060", "localhost", "example.com:6060"} {
		_, err := profileListener(addr)
		var ue UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--pprof") {
			t.Errorf("%s: %v, want a usage error naming --pprof", addr, err)
		}
	}
	l, err := profileListener("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: profileHandler()}
	go srv.Serve(l)
	defer srv.Close()
	resp, err := http.Get("http://" + l.Addr().String() + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(b) == 0 {
		t.Errorf("/debug/pprof/cmdline: %s %q", resp.Status, b)
	}
}
