package payload

import (
	"context"
	"io"
	"log"
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
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func multiArch(t *testing.T) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, a := range []string{"amd64", "arm64"} {
		img, err := random.Image(1024, 1)
		if err != nil {
			t.Fatal(err)
		}
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", a
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: a}}})
	}
	return idx
}

func TestAssemble(t *testing.T) {
	var n atomic.Int64
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Add(1); reg.ServeHTTP(w, r) }))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	// The registry mirrors docker.io (K3s system images) and ghcr.io (under /ghcr).
	system, err := images.K3sImages("v1.31.4+k3s1")
	if err != nil {
		t.Fatal(err)
	}
	push := func(ref string) {
		r, err := name.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.WriteIndex(r, multiArch(t)); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range system {
		push(host + "/" + strings.TrimPrefix(s, "docker.io/"))
	}
	push(host + "/ghcr/" + strings.TrimPrefix(manifests.TelemetryImage, "ghcr.io/"))
	cm, err := images.CertManagerImages(certmanager.DefaultVersion)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cm {
		push(host + "/quay/" + strings.TrimPrefix(s, "quay.io/"))
	}

	dir := t.TempDir()
	mf := filepath.Join(dir, "telemetry.yaml")
	if err := os.WriteFile(mf, manifests.Telemetry, 0o644); err != nil {
		t.Fatal(err)
	}
	board, _ := plan.RPi4(4)
	in := Inputs{
		K3sVersion: "v1.31.4+k3s1", Manifests: []string{dir}, CacheDir: t.TempDir(), Board: board, CertManager: true,
		Mirrors:     map[string]string{"docker.io": srv.URL, "ghcr.io": srv.URL + "/ghcr", "quay.io": srv.URL + "/quay"},
		Epoch:       time.Unix(1700000000, 0),
		PullOptions: []images.Option{images.WithKeychain(authn.NewMultiKeychain())},
	}
	tr := tree.New()
	res, err := Assemble(context.Background(), in, tr)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 14 {
		t.Fatalf("%d images, want 8 K3s, telemetry and 5 cert-manager", len(res.Images))
	}
	for _, img := range res.Images {
		p := ImagesDir + "/" + images.ArchiveName(img)
		e := tr.Get(p)
		if e == nil {
			t.Fatalf("%s missing", p)
		}
		data, err := tr.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != e.Size {
			t.Errorf("%s: size %d, content %d bytes", p, e.Size, len(data))
		}
		if img.Platform.Architecture != "arm64" || strings.Contains(strings.Join(img.Names, " "), host) {
			t.Errorf("%s: %v %v", img.Ref, img.Platform, img.Names)
		}
	}
	for _, m := range []string{certmanager.ChartFile, certmanager.IssuersFile} {
		if tr.Get(ManifestsDir+"/"+m) == nil {
			t.Errorf("cert-manager's %s not in the tree", m)
		}
	}
	if tr.Get(ManifestsDir+"/telemetry.yaml") == nil {
		var paths []string
		tr.Walk(func(e *tree.Entry) error { paths = append(paths, e.Path); return nil })
		t.Errorf("manifest not in tree: %v", paths)
	}

	// A warm rebuild pinned by the first build's digests makes no request.
	in.Pins = map[string]string{}
	for _, img := range res.Images {
		in.Pins[img.Ref] = img.Digest.String()
	}
	before := n.Load()
	if _, err := Assemble(context.Background(), in, tree.New()); err != nil {
		t.Fatal(err)
	}
	if n.Load() != before {
		t.Errorf("warm rebuild made %d requests", n.Load()-before)
	}
}

func TestAssembleRefusesBadManifests(t *testing.T) {
	dir := t.TempDir()
	bad := strings.Replace(string(manifests.Telemetry), "cpu: 200m\n              memory: 200Mi", "memory: 200Mi", 1)
	if err := os.WriteFile(filepath.Join(dir, "app.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	board, _ := plan.RPi4(4)
	tr := tree.New()
	_, err := Assemble(context.Background(), Inputs{K3sVersion: "v1.31.4+k3s1", Manifests: []string{dir}, CacheDir: t.TempDir(), Board: board}, tr)
	if err == nil || !strings.Contains(err.Error(), "missing requests.cpu") || !strings.Contains(err.Error(), "app.yaml") {
		t.Fatalf("error %v", err)
	}
	if tr.Len() != 0 {
		t.Errorf("tree written despite the error: %d entries", tr.Len())
	}
}
