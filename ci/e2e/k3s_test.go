//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/images"
	"github.com/edgeimg/edgeimg/manifests"
	"github.com/edgeimg/edgeimg/manifests/certmanager"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// k3sVersion is the K3s release the test image ships.
const k3sVersion = "v1.31.4+k3s1"

// k3sPayload is the K3s part of the test image's spec.
type k3sPayload struct {
	// Spec is the spec's k3s, manifests and registries sections (YAML, top level).
	Spec string
	// StandIn is true when /usr/local/bin/k3s is ci/e2e/k3s-standin, not K3s.
	StandIn bool
	// Binary is the k3s executable shipped.
	Binary string
}

// k3sPayload sets up what `edgeimg build` needs for a K3s image, offline: the k3s-arm64
// executable served on the loopback, and a registry on the loopback holding every image
// the payload pulls (the release's system images, cert-manager's and the example workload's),
// reached through the spec's registries.mirrors.
//
// Real K3s releases cannot be downloaded on the build machines: unless EDGEIMG_E2E_K3S names
// a real linux/arm64 k3s, the executable is the stand-in (ci/e2e/k3s-standin, built here),
// and the images are small random linux/arm64 images under the real names — the stand-in runs
// none of them. With EDGEIMG_E2E_K3S the system and cert-manager images are pulled from their
// real registries (a user's machine with network) and only the example workload, which is
// built from this repository, comes from the loopback registry.
func (h *harness) k3sPayload() k3sPayload {
	h.t.Helper()
	p := k3sPayload{Binary: os.Getenv("EDGEIMG_E2E_K3S")}
	if p.Binary == "" {
		p.StandIn = true
		p.Binary = filepath.Join(h.work, "bin", "k3s-standin-linux-arm64")
		h.goBuild(p.Binary, "./ci/e2e/k3s-standin", "GOOS=linux", "GOARCH=arm64")
	}
	bin, err := os.ReadFile(p.Binary)
	if err != nil {
		h.t.Fatalf("EDGEIMG_E2E_K3S: %v", err)
	}
	sum := sha256.Sum256(bin)
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/k3s-arm64" {
			http.NotFound(w, r)
			return
		}
		w.Write(bin)
	}))
	h.t.Cleanup(files.Close)

	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	h.t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	refs := []string{manifests.TelemetryImage}
	if p.StandIn {
		system, err := images.K3sImages(k3sVersion)
		if err != nil {
			h.t.Fatal(err)
		}
		cm, err := images.CertManagerImages(certmanager.DefaultVersion)
		if err != nil {
			h.t.Fatal(err)
		}
		refs = append(append(refs, system...), cm...)
	}
	mirror := map[string]string{"docker.io/": "", "quay.io/": "quay/", "ghcr.io/": "ghcr/"}
	for _, ref := range refs {
		var path string
		for prefix, m := range mirror {
			if strings.HasPrefix(ref, prefix) {
				path = m + strings.TrimPrefix(ref, prefix)
			}
		}
		r, err := name.ParseReference(host+"/"+path, name.Insecure)
		if err != nil {
			h.t.Fatal(err)
		}
		idx := h.arm64Image()
		if !p.StandIn && ref == manifests.TelemetryImage {
			// A real K3s runs it: the real service, built from this repository.
			if idx, err = images.BuildGoImage(context.Background(), h.root, "./manifests/telemetry",
				[]v1.Platform{{OS: "linux", Architecture: "arm64"}}, time.Unix(0, 0)); err != nil {
				h.t.Fatal(err)
			}
		}
		if err := remote.WriteIndex(r, idx); err != nil {
			h.t.Fatalf("pushing %s to the test registry: %v", ref, err)
		}
	}

	dir := h.specDir()
	h.writeFile(filepath.Join(dir, "manifests", "telemetry.yaml"), manifests.Telemetry, 0o644)
	mirrors := fmt.Sprintf("    ghcr.io: %s/ghcr\n", reg.URL)
	if p.StandIn {
		mirrors += fmt.Sprintf("    docker.io: %s\n    quay.io: %s/quay\n", reg.URL, reg.URL)
	}
	p.Spec = fmt.Sprintf(`k3s:
  version: %s
  binary:
    url: %s/k3s-arm64
    sha256: %s
manifests: [manifests]
registries:
  mirrors:
%s`, k3sVersion, files.URL, hex.EncodeToString(sum[:]), mirrors)
	return p
}

// arm64Image is a small random image for linux/arm64, in an index as registries serve them.
func (h *harness) arm64Image() v1.ImageIndex {
	h.t.Helper()
	img, err := random.Image(4096, 1)
	if err != nil {
		h.t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		h.t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "arm64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		h.t.Fatal(err)
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
}

// checkK3s checks the K3s part of a boot: the role's unit is running the shipped k3s, the
// air-gap archives are linked where K3s imports them, and the agent's figures.
func (h *harness) checkK3s(t *testing.T, con *console, f map[string]string) {
	t.Helper()
	if h.k3s.StandIn {
		t.Log("K3S STAND-IN: " + f["k3s_version"] + " — K3s itself is not exercised")
		if !strings.Contains(f["k3s_version"], "standin") {
			con.fail(t, "/usr/local/bin/k3s --version says %q, not the stand-in the image was built with", f["k3s_version"])
		}
	}
	if f["k3s_active"] != "active" {
		con.fail(t, "k3s.service is %q, want active (the agent starts the server role)", f["k3s_active"])
	}
	if n, _ := strconv.Atoi(f["k3s_images"]); n < 10 {
		con.fail(t, "%s air-gap archives in /var/lib/rancher/k3s/agent/images, want the system, cert-manager and workload images (14)", f["k3s_images"])
	}
	if !strings.Contains(f["k3s_manifests"], "telemetry.yaml") || !strings.Contains(f["k3s_manifests"], "edgeimg-cert-manager.yaml") {
		con.fail(t, "the slot's manifests are %q, want telemetry.yaml and cert-manager's", f["k3s_manifests"])
	}
	if f["agent_rss_kb"] != "" {
		t.Logf("edgeimg-agent on linux/arm64: RSS %s kB, peak %s kB", f["agent_rss_kb"], f["agent_hwm_kb"])
	}
}

// checkNodeReady checks that a heartbeat of this boot reported the K3s node Ready with no
// pod not ready: the agent read them from the local API with the kubeconfig K3s wrote.
func (f *fleetServer) checkNodeReady(t *testing.T, con *console) {
	t.Helper()
	d, err := f.theDevice(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, hb := range d.Heartbeats {
		if hb.At.After(con.start) && hb.Heartbeat.NodeReady && len(hb.Heartbeat.NotReadyPods) == 0 {
			return
		}
	}
	var last *api.Heartbeat
	if len(d.Heartbeats) > 0 {
		last = &d.Heartbeats[0].Heartbeat
	}
	con.fail(t, "no heartbeat of this boot reported the node Ready with every pod ready; the last: %+v", last)
}
