package cli

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/lock"
	"github.com/edgeimg/edgeimg/images"
	"github.com/edgeimg/edgeimg/manifests"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// k3sSpec writes a spec with the example manifests into dir; extra lines are appended.
func k3sSpec(t *testing.T, dir, extra string) string {
	t.Helper()
	example, err := filepath.Abs("../../../manifests/telemetry.yaml")
	must(t, err)
	p := filepath.Join(dir, "edgeimg.yaml")
	must(t, os.WriteFile(p, []byte(fmt.Sprintf("name: gw\nboard: rpi4\nk3s: {}\nmanifests: [%s]\n%s", example, extra)), 0o644))
	return p
}

func TestPlan(t *testing.T) {
	dir := t.TempDir()
	p := k3sSpec(t, dir, "")
	out, _, err := execute(t, "plan", "-c", p)
	if err != nil || !strings.Contains(out, "rpi4-4GiB") || !strings.Contains(out, "Deployment smart-building/telemetry") || !strings.Contains(out, "FITS") {
		t.Fatalf("plan: %v\n%s", err, out)
	}
	out, _, err = execute(t, "plan", "-c", p, "--json")
	must(t, err)
	var plan struct {
		Fits      bool `json:"fits"`
		Workloads []struct {
			MaxReplicas int `json:"maxReplicas"`
		} `json:"workloads"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil || !plan.Fits || len(plan.Workloads) != 1 || plan.Workloads[0].MaxReplicas != 6 {
		t.Fatalf("plan --json: %v\n%s", err, out)
	}

	// On a 2 GiB Pi the telemetry HPA at 6 replicas does not fit: non-zero exit, named.
	p = k3sSpec(t, dir, "hardware: {ram: 2GiB}\n")
	out, _, err = execute(t, "plan", "-c", p)
	if err == nil || !strings.Contains(err.Error(), "allowOvercommit") || !strings.Contains(out+err.Error(), "smart-building/telemetry") {
		t.Fatalf("plan on 2GiB: %v\n%s", err, out)
	}
	p = k3sSpec(t, dir, "hardware: {ram: 2GiB}\nplan: {allowOvercommit: true}\n")
	if _, _, err := execute(t, "plan", "-c", p); err != nil {
		t.Fatalf("allowOvercommit: %v", err)
	}
	must(t, os.WriteFile(p, []byte("name: gw\nboard: rpi4\n"), 0o644))
	if _, _, err := execute(t, "plan", "-c", p); err == nil || !strings.Contains(err.Error(), "no k3s section") {
		t.Fatalf("plan without k3s: %v", err)
	}
}

// TestLockAndBuild: `edgeimg lock` writes edgeimg.lock; build fails when the spec needs an
// image the lock does not pin, and --update-lock adds it.
func TestLockAndBuild(t *testing.T) {
	cleanEnv(t)
	_, agent := setup(t)
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	push := func(ref string) {
		img, err := random.Image(256, 1)
		must(t, err)
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", "arm64"
		img, err = mutate.ConfigFile(img, cf)
		must(t, err)
		r, err := name.ParseReference(ref)
		must(t, err)
		dst, err := name.NewTag(host+"/"+r.Context().RepositoryStr()+":"+r.Identifier(), name.Insecure)
		must(t, err)
		must(t, remote.Write(dst, img))
	}
	system, err := images.K3sImages("v1.31.4+k3s1")
	must(t, err)
	cm, err := images.CertManagerImages("v1.16.2") // cert-manager is on by default
	must(t, err)
	for _, r := range append(append(system, manifests.TelemetryImage), cm...) {
		push(r)
	}
	var bin bytes.Buffer
	h := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_AARCH64), Version: 1, Ehsize: 64}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	must(t, binary.Write(&bin, binary.LittleEndian, h))
	sum := sha256.Sum256(bin.Bytes())
	rel := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch filepath.Base(r.URL.Path) {
		case "k3s-arm64":
			http.ServeContent(w, r, "k3s-arm64", time.Unix(0, 0), bytes.NewReader(bin.Bytes()))
		case "sha256sum-arm64.txt":
			fmt.Fprintf(w, "%s  k3s-arm64\n", hex.EncodeToString(sum[:]))
		default:
			http.NotFound(w, r)
		}
	}))
	defer rel.Close()

	spec := writeProject(t, t.TempDir(), "board: rpi4\n")
	dir := filepath.Dir(spec)
	base, err := os.ReadFile(spec)
	must(t, err)
	example, err := filepath.Abs("../../../manifests/telemetry.yaml")
	must(t, err)
	k3s := fmt.Sprintf("k3s:\n  binary: {url: %q}\nmanifests: [%s]\nregistries:\n  mirrors: {docker.io: %q, ghcr.io: %q, quay.io: %q}\n",
		rel.URL+"/download/v1.31.4+k3s1/k3s-arm64", example, reg.URL, reg.URL, reg.URL)
	must(t, os.WriteFile(spec, append(base, k3s...), 0o644))
	cache := filepath.Join(t.TempDir(), "cache")

	out, _, err := execute(t, "lock", "-c", spec, "--cache-dir", cache)
	if err != nil || !strings.Contains(out, "14 images, 1 downloads") {
		t.Fatalf("lock: %v\n%s", err, out)
	}
	l, err := lock.Read(filepath.Join(dir, lock.FileName))
	if err != nil || l == nil || l.Downloads[rel.URL+"/download/v1.31.4+k3s1/k3s-arm64"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("edgeimg.lock: %v %+v", err, l)
	}
	first, _ := os.ReadFile(filepath.Join(dir, lock.FileName))

	// The spec now needs an image the lock does not pin.
	push("docker.io/acme/extra:v1")
	must(t, os.WriteFile(spec, append(append(base, k3s...), "images: [docker.io/acme/extra:v1]\n"...), 0o644))
	_, _, err = execute(t, "build", "-c", spec, "--agent", agent, "--cache-dir", cache)
	if err == nil || !strings.Contains(err.Error(), "is stale") || !strings.Contains(err.Error(), "docker.io/acme/extra:v1") {
		t.Fatalf("build with a stale lock: %v", err)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, lock.FileName)); !bytes.Equal(now, first) {
		t.Error("a failed build changed edgeimg.lock")
	}
	_, stderr, err := execute(t, "build", "-c", spec, "--agent", agent, "--cache-dir", cache, "--update-lock")
	if err != nil {
		t.Fatalf("build --update-lock: %v\n%s", err, stderr)
	}
	l, err = lock.Read(filepath.Join(dir, lock.FileName))
	if err != nil || len(l.Images) != 15 || l.Images["docker.io/acme/extra:v1"] == "" || !strings.Contains(stderr, "wrote "+filepath.Join(dir, lock.FileName)) {
		t.Fatalf("updated lock: %v %+v\n%s", err, l, stderr)
	}
}
