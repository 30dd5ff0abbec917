package cli

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
)

// profileListener listens on addr for Go's profiles, which must stay on a loopback address:
// they reveal memory contents and cost CPU.
func profileListener(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, UsageError{Err: fmt.Errorf("--pprof %q: %w", addr, err)}
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, UsageError{Err: fmt.Errorf("--pprof %q: only a loopback address (127.0.0.1:PORT)", addr)}
	}
	return net.Listen("tcp", addr)
}

// profileHandler serves net/http/pprof's pages on a mux of its own (not http.DefaultServeMux).
func profileHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
