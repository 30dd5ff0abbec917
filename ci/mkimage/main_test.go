package main

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestPushTelemetry builds the telemetry service for two platforms and pushes it to an
// in-process registry; the pushed index has both, each running the binary as its entrypoint.
func TestPushTelemetry(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/acme/telemetry:v0.1.0"
	var out strings.Builder
	wd, _ := os.Getwd()
	if err := os.Chdir(filepath.Join(wd, "../..")); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	if err := run(context.Background(), &out, []string{"-pkg", "./manifests/telemetry", "-push", ref, "-insecure"}); err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(ref, name.Insecure)
	idx, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	if !strings.Contains(out.String(), d.String()) {
		t.Errorf("printed %q, want the index digest %s", out.String(), d)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range im.Manifests {
		got = append(got, m.Platform.String())
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if len(cf.Config.Entrypoint) != 1 || cf.Architecture != m.Platform.Architecture {
			t.Errorf("%s: entrypoint %v, architecture %s", m.Platform, cf.Config.Entrypoint, cf.Architecture)
		}
	}
	if strings.Join(got, ",") != "linux/arm64,linux/amd64" {
		t.Errorf("platforms %v", got)
	}
	if err := run(context.Background(), io.Discard, []string{"-pkg", "./manifests/telemetry"}); err == nil {
		t.Error("no -push or -layout accepted")
	}
}
