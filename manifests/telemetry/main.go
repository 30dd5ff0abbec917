// Command telemetry is the example workload of edgeimg's K3s payload: it ingests JSON
// telemetry from building sensors over HTTP (POST /ingest) and exposes /health and
// Prometheus-format /metrics. It is built into a linux/arm64+amd64 OCI image by
// images.BuildGoImage and deployed by manifests/telemetry.yaml.
package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	addr := ":8080"
	if v := os.Getenv("LISTEN_ADDR"); v != "" {
		addr = v
	}
	srv := &http.Server{Addr: addr, Handler: newServer().routes(), ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		os.Stderr.WriteString("telemetry: " + err.Error() + "\n")
		os.Exit(1)
	}
}
