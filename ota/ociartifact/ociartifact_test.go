package ociartifact

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgeimg/edgeimg/ota/bundle"
)

// writeBundle writes a signed bundle of about 3 MiB to dir and returns its path.
func writeBundle(t *testing.T, dir string) string {
	t.Helper()
	priv, _, err := bundle.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := bundle.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sys := make([]byte, 3<<20)
	rand.Read(sys)
	part := func(n string, b []byte) bundle.Source {
		return bundle.Source{Name: n, Size: int64(len(b)), Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
	}
	p := filepath.Join(dir, "gw-rpi4.update")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := bundle.Manifest{Name: "gw", Version: "2.1", Board: "rpi4", LayoutVersion: 1, MinVersion: "0"}
	if _, err := bundle.Write(f, m, sk, []bundle.Source{part(bundle.PartBoot, []byte("boot partition")), part(bundle.PartSystem, sys)}); err != nil {
		t.Fatal(err)
	}
	return p
}

// newRegistry is an in-memory registry that logs nothing.
func newRegistry() http.Handler { return registry.New(registry.Logger(log.New(io.Discard, "", 0))) }

// corrupting serves the registry h, but passes GET responses of blobs through mangle.
func corrupting(h http.Handler, mangle func([]byte) []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if rec.Code == http.StatusOK && len(body) > 1<<20 {
			body = mangle(body)
		}
		for k, v := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
}

func ref(t *testing.T, srv *httptest.Server, repo string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	src := writeBundle(t, dir)
	reg := httptest.NewServer(newRegistry())
	defer reg.Close()
	ctx := context.Background()
	r := ref(t, reg, "edge/gw:2.1")
	pushed, err := Push(ctx, r, src)
	if err != nil {
		t.Fatal(err)
	}

	// The manifest as stored by the registry.
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != pushed.Digest || desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("stored %s %s, pushed %s", desc.Digest, desc.MediaType, pushed.Digest)
	}
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{AnnotationVersion: "2.1", AnnotationTitle: "gw-rpi4.update", AnnotationBoard: "rpi4", AnnotationName: "gw"}
	for k, v := range want {
		if m.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, m.Annotations[k], v)
		}
	}
	st, _ := os.Stat(src)
	if m.ArtifactType != ArtifactType || m.Config.MediaType != types.OCIEmptyJSON || m.Config.Size != 2 ||
		len(m.Layers) != 1 || m.Layers[0].MediaType != BundleMediaType || m.Layers[0].Size != st.Size() {
		t.Errorf("manifest %s", desc.Manifest)
	}
	cfg, err := remote.Layer(r.Context().Digest(m.Config.Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := cfg.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(rc); string(b) != "{}" {
		t.Errorf("config blob %q, want {}", b)
	}
	rc.Close()

	// Pulled by tag and by digest: the same bytes.
	out := filepath.Join(dir, "out", "pulled.update")
	os.Mkdir(filepath.Dir(out), 0o755)
	for _, rr := range []name.Reference{r, r.Context().Digest(pushed.Digest.String())} {
		got, err := Pull(ctx, rr, out)
		if err != nil {
			t.Fatal(err)
		}
		if got.Digest != pushed.Digest || got.Annotations[AnnotationVersion] != "2.1" {
			t.Errorf("pull %s: %+v", rr, got)
		}
		a, _ := os.ReadFile(src)
		b, _ := os.ReadFile(out)
		if !bytes.Equal(a, b) {
			t.Fatalf("pull %s: the pulled bundle differs from the pushed one", rr)
		}
	}
	assertOnly(t, filepath.Dir(out), "pulled.update")
}

func TestPushRefusesNonBundle(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "notes.update")
	os.WriteFile(p, bytes.Repeat([]byte("not a bundle "), 1000), 0o644)
	reg := httptest.NewServer(newRegistry())
	defer reg.Close()
	if _, err := Push(context.Background(), ref(t, reg, "edge/gw:x"), p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("push of a non-bundle: %v", err)
	}
}

func TestPullRefuses(t *testing.T) {
	dir := t.TempDir()
	src := writeBundle(t, dir)
	ctx := context.Background()
	out := filepath.Join(dir, "out", "gw.update")
	os.Mkdir(filepath.Dir(out), 0o755)
	os.WriteFile(out, []byte("previous"), 0o644)
	check := func(what string, err error, msg string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: %v, want an error saying %q", what, err, msg)
		}
		if b, _ := os.ReadFile(out); string(b) != "previous" {
			t.Errorf("%s: the output file was changed", what)
		}
		assertOnly(t, filepath.Dir(out), "gw.update")
	}

	reg := httptest.NewServer(newRegistry())
	defer reg.Close()
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref(t, reg, "edge/app:1"), img); err != nil {
		t.Fatal(err)
	}
	_, err = Pull(ctx, ref(t, reg, "edge/app:1"), out)
	check("a container image", err, "not an edgeimg update")

	// The same artifact with another artifactType, and with another layer media type.
	core, _, err := artifact(src)
	if err != nil {
		t.Fatal(err)
	}
	for tag, edit := range map[string][2]string{
		"other-type":  {`"artifactType":"` + ArtifactType + `"`, `"artifactType":"application/vnd.example.other.v1"`},
		"other-layer": {`"mediaType":"` + string(BundleMediaType) + `"`, `"mediaType":"application/vnd.oci.image.layer.v1.tar"`},
	} {
		c := *core
		c.manifest = bytes.Replace(core.manifest, []byte(edit[0]), []byte(edit[1]), 1)
		if bytes.Equal(c.manifest, core.manifest) {
			t.Fatalf("%s: edit %q not applied to %s", tag, edit[0], core.manifest)
		}
		img, err := partial.CompressedToImage(&c)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref(t, reg, "edge/gw:"+tag), img); err != nil {
			t.Fatal(err)
		}
		_, err = Pull(ctx, ref(t, reg, "edge/gw:"+tag), out)
		check(tag, err, map[string]string{"other-type": "not an edgeimg update", "other-layer": "not an edgeimg update bundle"}[tag])
	}

	// Blobs served truncated or with a flipped byte.
	for what, mangle := range map[string]func([]byte) []byte{
		"truncated": func(b []byte) []byte { return b[:len(b)-4096] },
		"corrupted": func(b []byte) []byte { c := bytes.Clone(b); c[len(c)/2] ^= 1; return c },
		"not a bundle": func(b []byte) []byte {
			c := bytes.Clone(b)
			copy(c, "garbage!")
			return c
		},
	} {
		bad := httptest.NewServer(corrupting(newRegistry(), mangle))
		r := ref(t, bad, "edge/gw:2.1")
		if _, err := Push(ctx, r, src); err != nil {
			t.Fatal(err)
		}
		_, err := Pull(ctx, r, out)
		check(what, err, "pulling")
		bad.Close()
	}

	// An unknown tag.
	_, err = Pull(ctx, ref(t, reg, "edge/gw:nope"), out)
	check("unknown tag", err, "pulling")
}

// assertOnly fails unless dir holds exactly the named files.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(names, " ") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}
