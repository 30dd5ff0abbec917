package builder

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/lock"
	"github.com/edgeimg/edgeimg/builder/payload"
	"github.com/edgeimg/edgeimg/images"
	"github.com/edgeimg/edgeimg/internal/testutil"
	"github.com/edgeimg/edgeimg/manifests"
	"github.com/edgeimg/edgeimg/manifests/certmanager"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	ocilayout "github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const testK3sVersion = "v1.31.4+k3s1"

// counting wraps a handler and counts the requests it serves.
type counting struct {
	*httptest.Server
	n atomic.Int64
}

func newCounting(t *testing.T, h http.Handler) *counting {
	c := &counting{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.n.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *counting) host() string { return strings.TrimPrefix(c.URL, "http://") }

// armImage is a small random image whose config says os/arch.
func armImage(t *testing.T, arch string) v1.Image {
	t.Helper()
	img, err := random.Image(512, 1)
	must(t, err)
	cf, err := img.ConfigFile()
	must(t, err)
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	img, err = mutate.ConfigFile(img, cf)
	must(t, err)
	return img
}

// standInK3s is a stand-in for the k3s-arm64 release asset: a 64-bit ARM ELF header and bytes.
func standInK3s(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	h := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_AARCH64), Version: 1, Ehsize: 64, Phentsize: 56, Shentsize: 64}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	must(t, binary.Write(&b, binary.LittleEndian, h))
	b.WriteString("edgeimg test stand-in for k3s-arm64\n")
	return b.Bytes()
}

// k3sWorld is a registry holding the K3s system images and the example workload's image, an
// amd64-only image, and a release server with a stand-in k3s.
type k3sWorld struct {
	reg, rel *counting
	bin      []byte
	pushed   map[string]v1.Hash // reference → digest of what was pushed
	arm      map[string]v1.Hash // reference → linux/arm64 manifest digest
}

func newK3sWorld(t *testing.T) *k3sWorld {
	t.Helper()
	w := &k3sWorld{pushed: map[string]v1.Hash{}, arm: map[string]v1.Hash{}}
	w.reg = newCounting(t, registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	push := func(ref string, img v1.Image, idx v1.ImageIndex) {
		r, err := name.ParseReference(ref)
		must(t, err)
		dst, err := name.NewTag(w.reg.host()+"/"+r.Context().RepositoryStr()+":"+r.Identifier(), name.Insecure)
		must(t, err)
		if idx != nil {
			must(t, remote.WriteIndex(dst, idx))
			w.pushed[ref], _ = idx.Digest()
			return
		}
		must(t, remote.Write(dst, img))
		w.pushed[ref], _ = img.Digest()
		w.arm[ref] = w.pushed[ref]
	}
	system, err := images.K3sImages(testK3sVersion)
	must(t, err)
	for _, ref := range system {
		push(ref, armImage(t, "arm64"), nil)
	}
	// The telemetry image is multi-platform, as images.BuildGoImage makes it.
	arm, amd := armImage(t, "arm64"), armImage(t, "amd64")
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	push(manifests.TelemetryImage, nil, idx)
	w.arm[manifests.TelemetryImage], _ = arm.Digest()
	cm, err := images.CertManagerImages(certmanager.DefaultVersion) // on by default
	must(t, err)
	for _, ref := range cm {
		push(ref, armImage(t, "arm64"), nil)
	}
	push("docker.io/acme/amd64only:v1", armImage(t, "amd64"), nil)
	push("docker.io/acme/extra:v1", armImage(t, "arm64"), nil)

	w.bin = standInK3s(t)
	sum := sha256.Sum256(w.bin)
	mux := http.NewServeMux()
	dir := "/k3s-io/k3s/releases/download/" + testK3sVersion + "/"
	mux.HandleFunc(dir+"k3s-arm64", func(rw http.ResponseWriter, r *http.Request) {
		http.ServeContent(rw, r, "k3s-arm64", time.Unix(testEpoch, 0), bytes.NewReader(w.bin))
	})
	mux.HandleFunc(dir+"sha256sum-arm64.txt", func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(rw, "%s  k3s-airgap-images-arm64.tar\n%s  k3s-arm64\n", strings.Repeat("0", 64), hex.EncodeToString(sum[:]))
	})
	w.rel = newCounting(t, mux)
	w.reg.n.Store(0)
	return w
}

// spec returns the k3s part of a test spec, with extra lines appended.
func (w *k3sWorld) spec(t *testing.T, extra string) string {
	t.Helper()
	example, err := filepath.Abs("../manifests/telemetry.yaml")
	must(t, err)
	return fmt.Sprintf(`k3s:
  binary:
    url: %s/k3s-io/k3s/releases/download/%s/k3s-arm64
  config:
    node-label: ["site=test"]
manifests: [%s]
registries:
  mirrors:
    docker.io: %s
    ghcr.io: %s
    quay.io: %s
  writeRegistriesYaml: true
%s`, w.rel.URL, testK3sVersion, example, w.reg.URL, w.reg.URL, w.reg.URL, extra)
}

func TestBuildK3s(t *testing.T) {
	w := newK3sWorld(t)
	dir := t.TempDir()
	res, err := build(t, dir, w.spec(t, ""))
	must(t, err)
	if w.reg.n.Load() == 0 || w.rel.n.Load() != 2 {
		t.Errorf("cold build: %d registry requests, %d release requests (want the binary and its checksums)", w.reg.n.Load(), w.rel.n.Load())
	}

	// The lock pins every image and the binary.
	l := res.Lock
	sum := sha256.Sum256(w.bin)
	if got := l.Downloads[w.rel.URL+"/k3s-io/k3s/releases/download/"+testK3sVersion+"/k3s-arm64"]; got != hex.EncodeToString(sum[:]) {
		t.Errorf("lock download of k3s-arm64 = %q; lock %+v", got, l.Downloads)
	}
	if len(l.Images) != 14 {
		t.Errorf("lock pins %d images, want 8 system + telemetry + 5 cert-manager: %v", len(l.Images), l.Images)
	}
	for ref, d := range w.pushed {
		if strings.Contains(ref, "acme") {
			continue
		}
		ref, _ := name.ParseReference(ref)
		if got := l.Images[images.Normalize(ref)]; got != d.String() {
			t.Errorf("lock: %s = %s, pushed %s", images.Normalize(ref), got, d)
		}
	}

	// The report lists every image with its digest; the SBOM lists them and k3s.
	k := res.Report.K3s
	if k == nil || len(k.Images) != 14 || k.Version != testK3sVersion || k.Role != "server" || !k.Plan.Fits {
		t.Fatalf("report k3s: %+v", k)
	}
	spdx, err := os.ReadFile(filepath.Join(dir, "out", "gw-rpi4.spdx.json"))
	if err == nil {
		for _, want := range []string{`"k3s"`, "docker.io/rancher/mirrored-pause", "ghcr.io/edgeimg/telemetry", w.arm[manifests.TelemetryImage].Hex} {
			if !bytes.Contains(spdx, []byte(want)) {
				t.Errorf("SBOM lacks %s", want)
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Error(err)
	}

	// The system slot, read back with debugfs.
	sys := systemPartition(t, res.Image)
	testutil.Run(t, "e2fsck", "-fn", sys)
	debugfs := func(cmd string) string {
		out, err := exec.Command("debugfs", "-R", cmd, sys).Output() // stdout only: no banner
		if err != nil {
			t.Fatalf("debugfs -R %q: %v", cmd, err)
		}
		return string(out)
	}
	if s := debugfs("stat /usr/local/bin/k3s"); !strings.Contains(s, "Mode:  0755") || !strings.Contains(s, fmt.Sprintf("Size: %d", len(w.bin))) {
		t.Errorf("k3s binary:\n%s", s)
	}
	for _, l := range K3sLinks {
		if s := debugfs("stat /usr/local/bin/" + l); !strings.Contains(s, "Type: symlink") || !strings.Contains(s, `Fast link dest: "k3s"`) {
			t.Errorf("%s:\n%s", l, s)
		}
	}
	for p, want := range map[string]string{
		"/etc/systemd/system/k3s.service":                 K3sServerUnit,
		"/etc/systemd/system/k3s-agent.service":           K3sAgentUnit,
		"/etc/systemd/system/edgeimg-k3s-prepare.service": K3sPrepareUnit,
		"/etc/systemd/system/edgeimg-k3s-prune.service":   K3sPruneUnit,
		"/usr/lib/edgeimg/k3s-prepare":                    K3sPrepareSh,
		"/etc/rancher/k3s/config.yaml":                    "",
		"/etc/rancher/k3s/registries.yaml":                "",
		"/usr/lib/edgeimg/k3s/manifests/telemetry.yaml":   string(manifests.Telemetry),
	} {
		got := debugfs("cat " + p)
		if want != "" && got != want {
			t.Errorf("%s differs:\n%s", p, got)
		}
		if got == "" {
			t.Errorf("%s is missing", p)
		}
	}
	cfg := debugfs("cat /etc/rancher/k3s/config.yaml")
	for _, want := range []string{"write-kubeconfig: /var/lib/rancher/k3s/k3s.yaml\n", "write-kubeconfig-mode: \"0600\"\n", "- site=test\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config.yaml lacks %q:\n%s", want, cfg)
		}
	}
	if r := debugfs("cat /etc/rancher/k3s/registries.yaml"); !strings.Contains(r, `"docker.io":`) || !strings.Contains(r, w.reg.URL) {
		t.Errorf("registries.yaml:\n%s", r)
	}
	// Neither K3s unit is enabled; the prepare unit is required by both.
	if s := debugfs("ls /etc/systemd/system/multi-user.target.wants"); strings.Contains(s, "k3s") {
		t.Errorf("a K3s unit is enabled:\n%s", s)
	}
	for _, p := range []string{"k3s.service.requires/edgeimg-k3s-prepare.service", "k3s-agent.service.requires/edgeimg-k3s-prepare.service", "k3s.service.wants/edgeimg-k3s-prune.service"} {
		if s := debugfs("stat /etc/systemd/system/" + p); !strings.Contains(s, "Type: symlink") {
			t.Errorf("%s:\n%s", p, s)
		}
	}
	if s := debugfs("stat /etc/rancher/k3s/config.yaml.d"); !strings.Contains(s, "Type: symlink") {
		t.Errorf("config.yaml.d is not a symlink to the data partition:\n%s", s)
	}

	// Every archive is there under its name, and reads back with its names and digests.
	ls := debugfs("ls -p /" + payload.ImagesDir)
	for _, img := range k.Images {
		if !strings.Contains(ls, "/"+filepath.Base(img.Archive)+"/") {
			t.Errorf("no archive %s in:\n%s", img.Archive, ls)
		}
	}
	var tel ReportImage
	for _, img := range k.Images {
		if img.Ref == manifests.TelemetryImage {
			tel = img
		}
	}
	dump := filepath.Join(t.TempDir(), "telemetry.tar")
	debugfs("dump " + tel.Archive + " " + dump)
	idx := readArchive(t, dump)
	im, err := idx.IndexManifest()
	must(t, err)
	names := map[string]bool{}
	for _, d := range im.Manifests {
		names[d.Annotations[images.AnnotationImageName]] = true
		if d.Digest != w.arm[manifests.TelemetryImage] {
			t.Errorf("archive entry %s has digest %s, want the arm64 manifest %s", d.Annotations[images.AnnotationImageName], d.Digest, w.arm[manifests.TelemetryImage])
		}
	}
	repo := "ghcr.io/edgeimg/telemetry"
	for _, n := range []string{manifests.TelemetryImage, repo + "@" + w.pushed[manifests.TelemetryImage].String(), repo + "@" + w.arm[manifests.TelemetryImage].String()} {
		if !names[n] {
			t.Errorf("archive lacks the name %s (has %v)", n, names)
		}
	}
	img, err := idx.Image(w.arm[manifests.TelemetryImage])
	must(t, err)
	cf, err := img.ConfigFile()
	must(t, err)
	if cf.Architecture != "arm64" || cf.OS != "linux" {
		t.Errorf("archive image is %s/%s", cf.OS, cf.Architecture)
	}
	layers, err := img.Layers()
	must(t, err)
	for _, l := range layers {
		rc, err := l.Compressed()
		must(t, err)
		_, err = io.Copy(io.Discard, rc) // verifies the digest
		rc.Close()
		must(t, err)
	}

	// A warm rebuild pinned by the lock makes no request at all, and gives the same image.
	w.reg.n.Store(0)
	w.rel.n.Store(0)
	res2, err := build(t, dir, w.spec(t, ""), WithLock(l, "edgeimg.lock"), WithOutputDir(filepath.Join(dir, "out2")))
	must(t, err)
	if w.reg.n.Load() != 0 || w.rel.n.Load() != 0 {
		t.Errorf("warm rebuild: %d registry and %d release requests, want none", w.reg.n.Load(), w.rel.n.Load())
	}
	if res2.Report.Outputs[0].SHA256 != res.Report.Outputs[0].SHA256 {
		t.Errorf("warm rebuild differs: %s, first %s", res2.Report.Outputs[0].SHA256, res.Report.Outputs[0].SHA256)
	}
	if !res2.Lock.Equal(l) {
		t.Errorf("rebuild lock differs:\n%s\nfirst:\n%s", res2.Lock.Encode(), l.Encode())
	}

	// A spec that needs an image the lock does not pin: stale, unless the lock may be updated.
	extra := "images: [docker.io/acme/extra:v1]\n"
	_, err = build(t, dir, w.spec(t, extra), WithLock(l, "edgeimg.lock"), WithOutputDir(filepath.Join(dir, "out3")))
	var stale *lock.StaleError
	if !errors.As(err, &stale) || !strings.Contains(err.Error(), "docker.io/acme/extra:v1") || !strings.Contains(err.Error(), "--update-lock") {
		t.Fatalf("stale lock: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "out3", "gw-rpi4.img")); err == nil {
		t.Error("a failed build left an image")
	}
	res3, err := build(t, dir, w.spec(t, extra), WithLock(l, "edgeimg.lock"), WithUpdateLock(), WithOutputDir(filepath.Join(dir, "out3")))
	must(t, err)
	if res3.Lock.Images["docker.io/acme/extra:v1"] != w.pushed["docker.io/acme/extra:v1"].String() || len(res3.Lock.Images) != 15 {
		t.Errorf("updated lock: %v", res3.Lock.Images)
	}
}

// TestBuildK3sBadInput checks that bad payloads fail early, naming the culprit.
func TestBuildK3sBadInput(t *testing.T) {
	w := newK3sWorld(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "amd64.yaml")
	must(t, os.WriteFile(bad, []byte(`apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: default}
spec:
  containers:
    - name: legacy
      image: docker.io/acme/amd64only:v1
      resources:
        requests: {cpu: 10m, memory: 16Mi}
        limits: {cpu: 10m, memory: 16Mi}
`), 0o644))
	spec := strings.Replace(w.spec(t, ""), "manifests: [", "manifests: ["+bad+", ", 1)
	_, err := build(t, dir, spec, WithOutputDir(filepath.Join(dir, "bad")))
	if err == nil || !strings.Contains(err.Error(), "docker.io/acme/amd64only:v1") || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "no linux/arm64 variant") {
		t.Fatalf("amd64-only image: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(dir, "bad"))
		if len(entries) > 0 {
			t.Errorf("a failed build left %v", entries)
		}
	}

	// A release whose checksum does not match the binary.
	w.bin = append(w.bin, 'x')
	_, err = build(t, t.TempDir(), w.spec(t, ""))
	if err == nil || !strings.Contains(err.Error(), "k3s.binary") {
		t.Fatalf("corrupt k3s download: %v", err)
	}
}

// systemPartition extracts partition 5 (system A) of img.
func systemPartition(t *testing.T, img string) string {
	t.Helper()
	var tbl sfdiskTable
	must(t, json.Unmarshal([]byte(testutil.Run(t, "sfdisk", "--json", img)), &tbl))
	p := tbl.PartitionTable.Partitions[4]
	return extract(t, img, p.Start*512, p.Size*512)
}

// readArchive unpacks an air-gap archive and opens it as an OCI layout.
func readArchive(t *testing.T, p string) v1.ImageIndex {
	t.Helper()
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		target := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			must(t, os.MkdirAll(target, 0o755))
			continue
		}
		must(t, os.MkdirAll(filepath.Dir(target), 0o755))
		b, err := io.ReadAll(tr)
		must(t, err)
		must(t, os.WriteFile(target, b, 0o644))
	}
	idx, err := ocilayout.ImageIndexFromPath(dir)
	must(t, err)
	return idx
}

// TestK3sPrepareScript runs the boot-time script against two releases in a scratch root.
func TestK3sPrepareScript(t *testing.T) {
	testutil.NeedTool(t, "sh")
	root := t.TempDir()
	slot := filepath.Join(root, "usr/lib/edgeimg/k3s")
	release := func(files map[string]string) {
		must(t, os.RemoveAll(slot))
		for p, c := range files {
			must(t, os.MkdirAll(filepath.Dir(filepath.Join(slot, p)), 0o755))
			must(t, os.WriteFile(filepath.Join(slot, p), []byte(c), 0o644))
		}
	}
	script := filepath.Join(t.TempDir(), "k3s-prepare")
	must(t, os.WriteFile(script, []byte(K3sPrepareSh), 0o755))
	run := func() {
		cmd := exec.Command("sh", script)
		cmd.Env = append(os.Environ(), "EDGEIMG_ROOT="+root)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("k3s-prepare: %v\n%s", err, out)
		}
	}
	data := filepath.Join(root, "var/lib/rancher/k3s")
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	ls := func(d string) []string {
		entries, _ := os.ReadDir(d)
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		sort.Strings(out)
		return out
	}

	release(map[string]string{"images/a.tar": "A", "images/b.tar": "B", "manifests/app.yaml": "app: 1\n", "manifests/old.yaml": "old\n"})
	must(t, os.MkdirAll(filepath.Join(data, "server/manifests"), 0o755))
	must(t, os.WriteFile(filepath.Join(data, "server/manifests/coredns.yaml"), []byte("k3s's own\n"), 0o644))
	run()
	run() // idempotent
	if l, _ := os.Readlink(filepath.Join(data, "agent/images/a.tar")); l != "/usr/lib/edgeimg/k3s/images/a.tar" {
		t.Errorf("agent/images/a.tar -> %q", l)
	}
	if got := read(filepath.Join(data, "server/manifests/app.yaml")); got != "app: 1\n" {
		t.Errorf("app.yaml: %q", got)
	}
	if got := read(filepath.Join(root, "var/lib/edgeimg/k3s-manifests.list")); got != "app.yaml\nold.yaml\n" {
		t.Errorf("list: %q", got)
	}

	// Release 2 changes app.yaml, drops old.yaml and b.tar, adds new.yaml.
	release(map[string]string{"images/a.tar": "A", "manifests/app.yaml": "app: 2\n", "manifests/new.yaml": "new\n"})
	run()
	if got := ls(filepath.Join(data, "agent/images")); strings.Join(got, " ") != "a.tar" {
		t.Errorf("agent/images after release 2: %v", got)
	}
	if got := ls(filepath.Join(data, "server/manifests")); strings.Join(got, " ") != "app.yaml coredns.yaml new.yaml" {
		t.Errorf("server/manifests after release 2: %v", got)
	}
	if got := read(filepath.Join(data, "server/manifests/app.yaml")); got != "app: 2\n" {
		t.Errorf("app.yaml not updated: %q", got)
	}
	if got := read(filepath.Join(root, "var/lib/edgeimg/k3s-manifests-dropped/old.yaml")); got != "old\n" {
		t.Errorf("dropped old.yaml: %q", got)
	}
	if got := read(filepath.Join(root, "var/lib/edgeimg/k3s-manifests.list")); got != "app.yaml\nnew.yaml\n" {
		t.Errorf("list: %q", got)
	}

	// The prune script deletes the dropped manifest's objects once the API answers.
	calls := filepath.Join(t.TempDir(), "calls")
	kubectl := filepath.Join(t.TempDir(), "kubectl")
	must(t, os.WriteFile(kubectl, []byte("#!/bin/sh\necho \"$*\" >>"+calls+"\n"), 0o755))
	prune := filepath.Join(t.TempDir(), "k3s-prune")
	must(t, os.WriteFile(prune, []byte(K3sPruneSh), 0o755))
	cmd := exec.Command("sh", prune)
	cmd.Env = append(os.Environ(), "EDGEIMG_ROOT="+root, "EDGEIMG_KUBECTL="+kubectl)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("k3s-prune: %v\n%s", err, out)
	}
	want := "get --raw=/readyz\n" +
		"delete --ignore-not-found --wait=false -f " + filepath.Join(root, "var/lib/edgeimg/k3s-manifests-dropped/old.yaml") + "\n" +
		"-n kube-system delete --ignore-not-found addons.k3s.cattle.io old\n"
	if got := read(calls); got != want {
		t.Errorf("kubectl calls:\n%s\nwant:\n%s", got, want)
	}
	if got := ls(filepath.Join(root, "var/lib/edgeimg/k3s-manifests-dropped")); len(got) != 0 {
		t.Errorf("dropped manifests left after pruning: %v", got)
	}
}

func TestParseSHA256Sums(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	in := "0000000000000000000000000000000000000000000000000000000000000000  k3s\n" + sum + " *k3s-arm64\n"
	if got, err := parseSHA256Sums(strings.NewReader(in), "k3s-arm64"); err != nil || got != sum {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := parseSHA256Sums(strings.NewReader(in), "k3s-armhf"); err == nil || !strings.Contains(err.Error(), "no line for k3s-armhf") {
		t.Errorf("missing name: %v", err)
	}
	if _, err := parseSHA256Sums(strings.NewReader("xyz  k3s-arm64\n"), "k3s-arm64"); err == nil {
		t.Error("a bad digest was accepted")
	}
}

func FuzzParseSHA256Sums(f *testing.F) {
	f.Add([]byte(strings.Repeat("0", 64)+"  k3s-arm64\n"), "k3s-arm64")
	f.Add([]byte("garbage\n\n  \t*"), "k3s")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		sum, err := parseSHA256Sums(bytes.NewReader(data), name)
		if err == nil && (len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "") {
			t.Fatalf("accepted %q", sum)
		}
	})
}

func TestK3sConfig(t *testing.T) {
	b, err := K3sConfig(map[string]any{"disable": []any{"traefik"}, "write-kubeconfig-mode": "0644"})
	must(t, err)
	got := string(b)
	if !strings.Contains(got, "disable:\n    - traefik\n") || !strings.Contains(got, "write-kubeconfig-mode: \"0644\"\n") || !strings.Contains(got, "write-kubeconfig: /var/lib/rancher/k3s/k3s.yaml\n") {
		t.Errorf("config:\n%s", got)
	}
	again, _ := K3sConfig(map[string]any{"write-kubeconfig-mode": "0644", "disable": []any{"traefik"}})
	if !bytes.Equal(b, again) {
		t.Error("K3sConfig is not deterministic")
	}
}

func TestK3sUnits(t *testing.T) {
	for _, u := range []struct{ name, text, exec, typ string }{
		{"k3s.service", K3sServerUnit, "ExecStart=/usr/local/bin/k3s \\\n    server \\\n", "Type=notify"},
		{"k3s-agent.service", K3sAgentUnit, "ExecStart=/usr/local/bin/k3s \\\n    agent \\\n", "Type=exec"},
	} {
		for _, want := range []string{u.exec, u.typ, "KillMode=process\n", "Delegate=yes\n", "LimitNOFILE=1048576\n",
			"ExecStartPre=-/sbin/modprobe br_netfilter\n", "ExecStartPre=-/sbin/modprobe overlay\n", "Restart=always\n"} {
			if !strings.Contains(u.text, want) {
				t.Errorf("%s lacks %q", u.name, want)
			}
		}
	}
	for _, want := range []string{"Before=k3s.service k3s-agent.service\n", "After=local-fs.target", "Type=oneshot\n", "ExecStart=/usr/lib/edgeimg/k3s-prepare\n"} {
		if !strings.Contains(K3sPrepareUnit, want) {
			t.Errorf("prepare unit lacks %q", want)
		}
	}
	if !strings.Contains(K3sPruneUnit, "After=k3s.service\n") || !strings.Contains(K3sPruneUnit, "ExecStart=/usr/lib/edgeimg/k3s-prune\n") {
		t.Error("prune unit")
	}
	if path, err := exec.LookPath("systemd-analyze"); err == nil {
		dir := t.TempDir()
		for n, text := range map[string]string{"k3s.service": K3sServerUnit, "k3s-agent.service": K3sAgentUnit, "edgeimg-k3s-prepare.service": K3sPrepareUnit, "edgeimg-k3s-prune.service": K3sPruneUnit} {
			must(t, os.WriteFile(filepath.Join(dir, n), []byte(text), 0o644))
		}
		out, _ := exec.Command(path, "verify", "--man=no", filepath.Join(dir, "k3s.service")).CombinedOutput()
		if bytes.Contains(out, []byte("Unknown key")) || bytes.Contains(out, []byte("Invalid")) {
			t.Errorf("systemd-analyze verify:\n%s", out)
		}
	}
}
