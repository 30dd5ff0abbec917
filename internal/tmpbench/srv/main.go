package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeimg/edgeimg/fleet"
	"github.com/edgeimg/edgeimg/fleet/pki"
	"github.com/edgeimg/edgeimg/fleet/store"
)

func main() {
	dir, db := os.Args[1], os.Args[2]
	go http.ListenAndServe("127.0.0.1:6060", nil)
	ca, _ := pki.LoadCA(filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile))
	tlsConf, _ := pki.ServerTLSConfig(ca, filepath.Join(dir, pki.ServerFile), filepath.Join(dir, pki.ServerKeyFile))
	tok, _ := pki.ReadAdminToken(filepath.Join(dir, pki.AdminTokenFile))
	st, err := store.Open(context.Background(), db)
	if err != nil {
		panic(err)
	}
	h := fleet.NewServer(st, ca, fleet.WithAdminToken(tok), fleet.WithEnrollRate(0, 0))
	l, _ := net.Listen("tcp", "127.0.0.1:18443")
	srv := &http.Server{Handler: h, TLSConfig: tlsConf, IdleTimeout: 120 * time.Second}
	fmt.Println(srv.ServeTLS(l, "", ""))
}
