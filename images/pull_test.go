package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// countingRegistry is an in-process registry that counts the requests it serves.
type countingRegistry struct {
	*httptest.Server
	n     atomic.Int64
	mu    sync.Mutex
	paths []string
}

func newRegistry(t *testing.T, wrap func(http.Handler) http.Handler) *countingRegistry {
	t.Helper()
	r := &countingRegistry{}
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.n.Add(1)
		r.mu.Lock()
		r.paths = append(r.paths, req.Method+" "+req.URL.Path)
		r.mu.Unlock()
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *countingRegistry) host() string { return strings.TrimPrefix(r.URL, "http://") }

// platformImage is a random image whose config says os/arch.
func platformImage(t *testing.T, arch string, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(2048, layers)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func multiArch(t *testing.T, arches ...string) (v1.ImageIndex, map[string]v1.Image) {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	imgs := map[string]v1.Image{}
	for _, a := range arches {
		img := platformImage(t, a, 2)
		imgs[a] = img
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: a}}})
	}
	return idx, imgs
}

func pushIndex(t *testing.T, ref string, idx v1.ImageIndex) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
}

func pushImage(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
}

func digestOf(t *testing.T, d interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func newTestPuller(t *testing.T, cache string, opts ...Option) *Puller {
	t.Helper()
	opts = append([]Option{WithKeychain(authn.NewMultiKeychain())}, opts...)
	p, err := NewPuller(cache, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPullPicksArm64FromIndex(t *testing.T) {
	reg := newRegistry(t, nil)
	idx, imgs := multiArch(t, "amd64", "arm64")
	ref := reg.host() + "/acme/telemetry:v1"
	pushIndex(t, ref, idx)

	p := newTestPuller(t, t.TempDir())
	got, err := p.Pull(context.Background(), []Request{{Ref: ref, UsedBy: []string{"manifests/app.yaml"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("got %d images", len(got))
	}
	img := got[0]
	if img.Digest != digestOf(t, idx) {
		t.Errorf("Digest = %s, want the index digest %s", img.Digest, digestOf(t, idx))
	}
	if want := digestOf(t, imgs["arm64"]); img.ManifestDigest != want || digestOf(t, img.Image) != want {
		t.Errorf("ManifestDigest = %s, want the arm64 image %s", img.ManifestDigest, want)
	}
	if img.Platform.Architecture != "arm64" {
		t.Errorf("platform %s", img.Platform.String())
	}
	wantNames := []string{ref, reg.host() + "/acme/telemetry@" + img.Digest.String(), reg.host() + "/acme/telemetry@" + img.ManifestDigest.String()}
	if strings.Join(img.Names, " ") != strings.Join(wantNames, " ") {
		t.Errorf("Names = %v, want %v", img.Names, wantNames)
	}
	// The cached image is complete and valid.
	if err := validateImage(img.Image); err != nil {
		t.Fatal(err)
	}
}

func validateImage(img v1.Image) error {
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func TestPullWithoutArm64NamesImageAndFile(t *testing.T) {
	reg := newRegistry(t, nil)
	idx, _ := multiArch(t, "amd64", "s390x")
	pushIndex(t, reg.host()+"/acme/indexonly:v2", idx)
	pushImage(t, reg.host()+"/acme/amd64only:v1", platformImage(t, "amd64", 1))

	p := newTestPuller(t, t.TempDir())
	for _, tc := range []struct{ ref, file, has string }{
		{reg.host() + "/acme/amd64only:v1", "manifests/legacy.yaml", "the image is linux/amd64"},
		{reg.host() + "/acme/indexonly:v2", "manifests/other.yaml", "the index has linux/amd64, linux/s390x"},
	} {
		_, err := p.Pull(context.Background(), []Request{{Ref: tc.ref, UsedBy: []string{tc.file}}})
		if err == nil {
			t.Fatalf("%s: pulled an image without linux/arm64", tc.ref)
		}
		for _, s := range []string{tc.ref, tc.file, "no linux/arm64 variant", tc.has} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not mention %q", err, s)
			}
		}
	}
}

func TestPullReportsAllFailures(t *testing.T) {
	reg := newRegistry(t, nil)
	p := newTestPuller(t, t.TempDir())
	_, err := p.Pull(context.Background(), []Request{
		{Ref: reg.host() + "/nope/a:1", UsedBy: []string{"a.yaml"}},
		{Ref: reg.host() + "/nope/b:1", UsedBy: []string{"b.yaml"}},
	})
	if err == nil || !strings.Contains(err.Error(), "nope/a:1 (used by a.yaml)") || !strings.Contains(err.Error(), "nope/b:1 (used by b.yaml)") {
		t.Fatalf("error %v does not name both missing images", err)
	}
}

func TestMirrorKeepsOriginalName(t *testing.T) {
	mirror := newRegistry(t, nil)
	idx, imgs := multiArch(t, "arm64", "amd64")
	// The mirror holds docker.io's rancher/mirrored-pause under the same repository path.
	pushIndex(t, mirror.host()+"/rancher/mirrored-pause:3.6", idx)

	p := newTestPuller(t, t.TempDir(), WithMirrors(map[string]string{"docker.io": mirror.URL}))
	got, err := p.Pull(context.Background(), []Request{{Ref: "rancher/mirrored-pause:3.6"}})
	if err != nil {
		t.Fatal(err)
	}
	img := got[0]
	if img.Ref != "docker.io/rancher/mirrored-pause:3.6" {
		t.Errorf("Ref = %s", img.Ref)
	}
	for _, n := range img.Names {
		if !strings.HasPrefix(n, "docker.io/rancher/mirrored-pause") {
			t.Errorf("name %s does not keep docker.io", n)
		}
	}
	if img.ManifestDigest != digestOf(t, imgs["arm64"]) {
		t.Error("wrong image from the mirror")
	}
	if mirror.n.Load() == 0 {
		t.Error("the mirror was not asked")
	}
}

func TestMirrorWithPrefixAndAuth(t *testing.T) {
	requireAuth := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, pw, ok := r.BasicAuth(); !ok || u != "edge" || pw != "s3cret" {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	mirror := newRegistry(t, requireAuth)
	idx, _ := multiArch(t, "arm64")
	// Push with credentials.
	r, _ := name.ParseReference(mirror.host() + "/ghcr/acme/extra:v1")
	if err := remote.WriteIndex(r, idx, remote.WithAuth(&authn.Basic{Username: "edge", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}
	req := []Request{{Ref: "ghcr.io/acme/extra:v1"}}
	mirrors := WithMirrors(map[string]string{"ghcr.io": mirror.URL + "/ghcr"})

	if _, err := newTestPuller(t, t.TempDir(), mirrors).Pull(context.Background(), req); err == nil {
		t.Fatal("pulled without credentials")
	}
	p := newTestPuller(t, t.TempDir(), mirrors, WithAuth(map[string]authn.AuthConfig{mirror.host(): {Username: "edge", Password: "s3cret"}}))
	got, err := p.Pull(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Ref != "ghcr.io/acme/extra:v1" {
		t.Errorf("Ref = %s", got[0].Ref)
	}
}

func TestWarmCacheMakesNoRequest(t *testing.T) {
	reg := newRegistry(t, nil)
	var reqs []Request
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		idx, _ := multiArch(t, "amd64", "arm64")
		ref := reg.host() + "/acme/" + n + ":1.0"
		pushIndex(t, ref, idx)
		reqs = append(reqs, Request{Ref: ref})
	}
	cache := t.TempDir()
	cold, err := newTestPuller(t, cache, WithConcurrency(2)).Pull(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	if reg.n.Load() == 0 {
		t.Fatal("cold pull made no request")
	}
	// Pin what the cold pull resolved, as the lock file does, and pull again.
	for i := range reqs {
		reqs[i].Digest = cold[i].Digest.String()
	}
	before := reg.n.Load()
	reg.mu.Lock()
	reg.paths = nil
	reg.mu.Unlock()
	warm, err := newTestPuller(t, cache, WithConcurrency(2)).Pull(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	if n := reg.n.Load() - before; n != 0 {
		t.Errorf("warm pull made %d requests: %v", n, reg.paths)
	}
	for i := range warm {
		if warm[i].ManifestDigest != cold[i].ManifestDigest || digestOf(t, warm[i].Image) != cold[i].ManifestDigest {
			t.Errorf("%s: warm pull differs", warm[i].Ref)
		}
		if err := validateImage(warm[i].Image); err != nil {
			t.Error(err)
		}
	}
	// A reference pinned by digest is served from the cache too.
	before = reg.n.Load()
	byDigest := reg.host() + "/acme/a@" + cold[0].Digest.String()
	got, err := newTestPuller(t, cache).Pull(context.Background(), []Request{{Ref: byDigest}})
	if err != nil {
		t.Fatal(err)
	}
	if reg.n.Load() != before {
		t.Error("digest reference touched the network")
	}
	if got[0].Names[0] != byDigest {
		t.Errorf("Names = %v", got[0].Names)
	}
}

func TestCorruptCacheEntryIsRefetchedNotServed(t *testing.T) {
	reg := newRegistry(t, nil)
	idx, _ := multiArch(t, "arm64")
	ref := reg.host() + "/acme/x:1"
	pushIndex(t, ref, idx)
	cache := t.TempDir()
	c, err := newBlobCache(cache)
	if err != nil {
		t.Fatal(err)
	}
	// A blob whose content does not match its digest is refused.
	h := digestOf(t, idx)
	if err := c.put(h, strings.NewReader("not the index")); err == nil {
		t.Fatal("cache accepted content with the wrong digest")
	}
	if c.has(h) {
		t.Fatal("bad blob left in the cache")
	}
}

func TestArchiveReadsBack(t *testing.T) {
	reg := newRegistry(t, nil)
	idx, imgs := multiArch(t, "amd64", "arm64")
	ref := reg.host() + "/rancher/mirrored-coredns-coredns:1.12.0"
	pushIndex(t, ref, idx)
	got, err := newTestPuller(t, t.TempDir()).Pull(context.Background(), []Request{{Ref: ref}})
	if err != nil {
		t.Fatal(err)
	}
	img := got[0]

	var buf1, buf2 bytes.Buffer
	if err := WriteArchive(&buf1, img); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchive(&buf2, img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf1.Bytes(), buf2.Bytes()) {
		t.Fatal("archive is not reproducible")
	}
	if n := ArchiveName(img); strings.ContainsAny(n, "/:@") || !strings.HasSuffix(n, ".tar") {
		t.Errorf("ArchiveName = %q", n)
	}

	dir := untar(t, buf1.Bytes())
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	ii, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range im.Manifests {
		names = append(names, d.Annotations[AnnotationImageName])
		if d.Digest != digestOf(t, imgs["arm64"]) {
			t.Errorf("%s points at %s, not the arm64 image", d.Annotations[AnnotationImageName], d.Digest)
		}
		a, err := ii.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := a.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != "arm64" || cf.OS != "linux" {
			t.Errorf("archive image is %s/%s", cf.OS, cf.Architecture)
		}
		if err := validateImage(a); err != nil { // layers present, digests verified on read
			t.Fatal(err)
		}
		ls, _ := a.Layers()
		if len(ls) != 2 {
			t.Errorf("%d layers", len(ls))
		}
	}
	want := []string{ref, reg.host() + "/rancher/mirrored-coredns-coredns@" + digestOf(t, idx).String(), reg.host() + "/rancher/mirrored-coredns-coredns@" + digestOf(t, imgs["arm64"]).String()}
	sort.Strings(names)
	sort.Strings(want)
	if strings.Join(names, "\n") != strings.Join(want, "\n") {
		t.Errorf("names in index.json:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
}

func untar(t *testing.T, b []byte) string {
	t.Helper()
	dir := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected entry %s", h.Name)
		}
	}
	return dir
}
