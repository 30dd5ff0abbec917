package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeimg/edgeimg/fleet"
	"github.com/edgeimg/edgeimg/fleet/pki"
	"github.com/edgeimg/edgeimg/fleet/store"
)

// Local is a fleet server run in this process on 127.0.0.1 for a load test.
type Local struct {
	URL        string
	CAPEM      []byte
	AdminToken string
	srv        *http.Server
	st         store.Store
	done       chan error
}

// StartLocal makes a CA in dir (which must be empty or new), opens the store at dbURL
// (default: fleet.db in dir) and serves the fleet API over TLS on 127.0.0.1 with no
// enrollment rate limit.
func StartLocal(ctx context.Context, dir, dbURL string) (*Local, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := pki.Init(dir, nil, time.Now()); err != nil {
		return nil, err
	}
	ca, err := pki.LoadCA(filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		return nil, err
	}
	tlsConf, err := pki.ServerTLSConfig(ca, filepath.Join(dir, pki.ServerFile), filepath.Join(dir, pki.ServerKeyFile))
	if err != nil {
		return nil, err
	}
	token, err := pki.ReadAdminToken(filepath.Join(dir, pki.AdminTokenFile))
	if err != nil {
		return nil, err
	}
	if dbURL == "" {
		dbURL = filepath.Join(dir, "fleet.db")
	}
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		return nil, err
	}
	h := fleet.NewServer(st, ca, fleet.WithAdminToken(token), fleet.WithEnrollRate(0, 0))
	srv := &http.Server{Handler: h, TLSConfig: tlsConf, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 10 * time.Minute,
		ErrorLog: log.New(io.Discard, "", 0)}
	lo := &Local{URL: "https://" + l.Addr().String(), CAPEM: ca.CertPEM, AdminToken: token, srv: srv, st: st, done: make(chan error, 1)}
	go func() { lo.done <- srv.ServeTLS(l, "", "") }()
	return lo, nil
}

// Close stops the server and closes its store.
func (l *Local) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := l.srv.Shutdown(ctx)
	if serr := <-l.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if cerr := l.st.Close(); err == nil {
		err = cerr
	}
	return err
}
