package payload

import (
	"context"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/images"
	"github.com/edgeimg/edgeimg/manifests"
	"github.com/edgeimg/edgeimg/manifests/certmanager"
	"github.com/edgeimg/edgeimg/manifests/plan"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// benchLayer is a layer of incompressible bytes (as gzip-compressed layers are), made
// from a seed so that a run is repeatable.
func benchLayer(seed uint64, size int) v1.Layer {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return static.NewLayer(b, types.OCILayer)
}

// BenchmarkPayload measures the payload stage of a build with 15 images, ~1 GB for
// linux/arm64 (the K3s system images, cert-manager's, the telemetry service and one extra
// image), pulled from an in-process registry through the content-addressed cache and
// streamed as air-gap archives (what the ext4 writer reads), cold (empty cache) and warm
// (the cache filled and every tag pinned by the lock: no request at all).
//
// The images share base layers as real ones do (a Debian-like base under six of them, a
// distroless-like one under five); the bytes layer sharing saves are reported: shared
// layers are downloaded and cached once, though each per-image archive in the slot holds its
// own copy (archives stay byte-stable per image for OTA deltas).
func BenchmarkPayload(b *testing.B) {
	var requests, served atomic.Int64
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		reg.ServeHTTP(countingResponse{w, &served}, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	system, err := images.K3sImages("v1.31.4+k3s1")
	if err != nil {
		b.Fatal(err)
	}
	cm, err := images.CertManagerImages(certmanager.DefaultVersion)
	if err != nil {
		b.Fatal(err)
	}
	const extra = "ghcr.io/acme/ingest-worker:v1"
	refs := append(append(append([]string{}, system...), cm...), manifests.TelemetryImage, extra)

	const mb = 1 << 20
	debianBase, distroless := benchLayer(1, 48*mb), benchLayer(2, 6*mb)
	var total, unique int64
	unique += 48*mb + 6*mb
	for i, ref := range refs {
		var layers []v1.Layer
		switch {
		case i%3 == 0: // six images on the Debian-like base
			layers = append(layers, debianBase)
			total += 48 * mb
		case i%3 == 1: // five on the distroless-like one
			layers = append(layers, distroless)
			total += 6 * mb
		}
		own := (20 + 8*(i%8)) * mb // 20–76 MB of the image's own layers
		layers = append(layers, benchLayer(uint64(100+i), own))
		total += int64(own)
		unique += int64(own)
		arm, err := mutate.AppendLayers(empty.Image, layers...)
		if err != nil {
			b.Fatal(err)
		}
		cf, _ := arm.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", "arm64"
		if arm, err = mutate.ConfigFile(arm, cf); err != nil {
			b.Fatal(err)
		}
		idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
			mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
		mirror := map[string]string{"docker.io/": "", "quay.io/": "quay/", "ghcr.io/": "ghcr/"}
		var path string
		for p, m := range mirror {
			if strings.HasPrefix(ref, p) {
				path = m + strings.TrimPrefix(ref, p)
			}
		}
		r, err := name.ParseReference(host + "/" + path)
		if err != nil {
			b.Fatal(err)
		}
		if err := remote.WriteIndex(r, idx); err != nil {
			b.Fatal(err)
		}
	}

	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "telemetry.yaml"), manifests.Telemetry, 0o644); err != nil {
		b.Fatal(err)
	}
	board, _ := plan.RPi4(8)
	in := Inputs{
		K3sVersion: "v1.31.4+k3s1", Manifests: []string{dir}, Images: []string{extra}, Board: board, CertManager: true,
		Mirrors:     map[string]string{"docker.io": srv.URL, "ghcr.io": srv.URL + "/ghcr", "quay.io": srv.URL + "/quay"},
		Epoch:       time.Unix(1700000000, 0),
		PullOptions: []images.Option{images.WithKeychain(authn.NewMultiKeychain())},
	}

	// stage runs the payload stage and reads every archive as the slot writer would.
	stage := func(b *testing.B, in Inputs) (Result, int64) {
		t := tree.New()
		res, err := Assemble(context.Background(), in, t)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Images) != len(refs) {
			b.Fatalf("%d images, want %d", len(res.Images), len(refs))
		}
		var archived int64
		err = t.Walk(func(e *tree.Entry) error {
			if e.Kind != tree.Regular || !strings.HasPrefix(e.Path, ImagesDir+"/") {
				return nil
			}
			rc, err := e.Content.Open()
			if err != nil {
				return err
			}
			defer rc.Close()
			n, err := io.Copy(io.Discard, rc)
			archived += n
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		return res, archived
	}

	var pins map[string]string
	cache := b.TempDir()
	b.Run("cold", func(b *testing.B) {
		for i := range b.N {
			in := in
			in.CacheDir = filepath.Join(cache, fmt.Sprint("cold", i))
			requests.Store(0)
			served.Store(0)
			start := time.Now()
			res, archived := stage(b, in)
			d := time.Since(start)
			b.ReportMetric(d.Seconds(), "s/build")
			b.ReportMetric(float64(served.Load())/mb, "MB-downloaded")
			b.ReportMetric(float64(archived)/mb, "MB-archives")
			b.ReportMetric(float64(requests.Load()), "requests")
			b.ReportMetric(float64(total)/mb, "MB-layers")
			b.ReportMetric(float64(total-unique)/mb, "MB-saved-by-sharing")
			pins = map[string]string{}
			for _, img := range res.Images {
				pins[img.Ref] = img.Digest.String()
			}
			if i == 0 {
				os.Rename(in.CacheDir, filepath.Join(cache, "warm"))
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		for range b.N {
			in := in
			in.CacheDir = filepath.Join(cache, "warm")
			in.Pins = pins
			requests.Store(0)
			start := time.Now()
			_, archived := stage(b, in)
			b.ReportMetric(time.Since(start).Seconds(), "s/build")
			b.ReportMetric(float64(archived)/mb, "MB-archives")
			if n := requests.Load(); n != 0 {
				b.Fatalf("a warm build made %d registry requests", n)
			}
		}
	})
}

// countingResponse counts the body bytes a handler writes.
type countingResponse struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c countingResponse) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.ResponseWriter.Write(p)
}
