package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/builder/payload"
	"github.com/edgeimg/edgeimg/images"
	"github.com/edgeimg/edgeimg/internal/testutil"
	"github.com/edgeimg/edgeimg/manifests/certmanager"
	"github.com/edgeimg/edgeimg/manifests/check"
	"github.com/edgeimg/edgeimg/manifests/plan"
	sigsyaml "sigs.k8s.io/yaml"
)

// chartVersion unpacks a chart archive and returns the version of its Chart.yaml.
func chartVersion(t *testing.T, tgz []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	must(t, err)
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatal("chart archive has no cert-manager/Chart.yaml")
		}
		must(t, err)
		if h.Name != "cert-manager/Chart.yaml" {
			continue
		}
		b, err := io.ReadAll(tr)
		must(t, err)
		var meta struct{ Name, Version string }
		must(t, sigsyaml.Unmarshal(b, &meta))
		if meta.Name != "cert-manager" {
			t.Errorf("chart %q", meta.Name)
		}
		return meta.Version
	}
}

// A K3s build installs cert-manager by default: its HelmChart with the chart inside, the CA
// issuers, its five images as archives, and its share of the memory plan.
func TestBuildCertManager(t *testing.T) {
	w := newK3sWorld(t)
	res, err := build(t, t.TempDir(), w.spec(t, ""))
	must(t, err)

	// The report: the five images, pulled for arm64 through the mirror, named as quay.io's.
	k := res.Report.K3s
	want, err := images.CertManagerImages(certmanager.DefaultVersion)
	must(t, err)
	var cmImages []ReportImage
	for _, img := range k.Images {
		if strings.HasPrefix(img.Ref, "quay.io/jetstack/cert-manager-") {
			cmImages = append(cmImages, img)
		}
	}
	if len(cmImages) != len(want) || len(want) != 5 {
		t.Fatalf("report has %d cert-manager images, want %v", len(cmImages), want)
	}
	for _, img := range cmImages {
		if !slices.Contains(want, img.Ref) || img.Platform != "linux/arm64" || img.Digest != w.pushed[img.Ref].String() {
			t.Errorf("image %+v (pushed %s)", img, w.pushed[img.Ref])
		}
		if !slices.Contains(img.UsedBy, "images/certmanager/"+certmanager.DefaultVersion+".txt") {
			t.Errorf("%s used by %v", img.Ref, img.UsedBy)
		}
	}
	// The HelmChart's values name the four that run as pods or Jobs; acmesolver too (the
	// controller's --acme-http01-solver-image comes from acmesolver.image).
	for _, img := range cmImages {
		if !slices.Contains(img.UsedBy, certmanager.ChartFile) {
			t.Errorf("%s: discovery did not find it in %s (used by %v)", img.Ref, certmanager.ChartFile, img.UsedBy)
		}
	}
	// The plan counts cert-manager, and the example still fits the 4 GiB Pi.
	if !slices.Contains(k.Plan.Components, plan.CertManager) || !k.Plan.Fits {
		t.Errorf("plan: %+v", k.Plan)
	}

	// The system slot, read back with debugfs.
	sys := systemPartition(t, res.Image)
	testutil.Run(t, "e2fsck", "-fn", sys)
	debugfs := func(cmd string) string {
		out, err := exec.Command("debugfs", "-R", cmd, sys).Output()
		if err != nil {
			t.Fatalf("debugfs -R %q: %v", cmd, err)
		}
		return string(out)
	}
	chartYAML := debugfs("cat /" + payload.ManifestsDir + "/" + certmanager.ChartFile)
	issuers := debugfs("cat /" + payload.ManifestsDir + "/" + certmanager.IssuersFile)
	if issuers != certmanager.Issuers() {
		t.Errorf("issuers manifest:\n%s", issuers)
	}
	var objs []check.Object
	for name, data := range map[string]string{certmanager.ChartFile: chartYAML, certmanager.IssuersFile: issuers} {
		o, err := check.Decode(name, []byte(data))
		must(t, err)
		objs = append(objs, o...)
	}
	if _, err := check.Check(objs); err != nil {
		t.Errorf("the shipped cert-manager manifests break the policy: %v", err)
	}
	var hc *check.HelmChart
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GVK.Kind]++
		if h, ok := o.Object.(*check.HelmChart); ok {
			hc = h
		}
	}
	if hc == nil || kinds["ClusterIssuer"] != 2 || kinds["Certificate"] != 1 {
		t.Fatalf("shipped objects: %v", kinds)
	}
	tgz, err := base64.StdEncoding.DecodeString(hc.Spec.ChartContent)
	must(t, err)
	if v := chartVersion(t, tgz); v != certmanager.DefaultVersion {
		t.Errorf("chartContent holds chart version %s, want %s", v, certmanager.DefaultVersion)
	}
	if hc.Spec.Repo != "" || hc.Spec.Chart != "" || !strings.Contains(hc.Spec.ValuesContent, "crds:\n  enabled: true") {
		t.Errorf("HelmChart would fetch or lacks CRDs: repo %q chart %q values:\n%s", hc.Spec.Repo, hc.Spec.Chart, hc.Spec.ValuesContent)
	}
	ls := debugfs("ls -p /" + payload.ImagesDir)
	for _, img := range cmImages {
		if !strings.Contains(ls, "/"+filepath.Base(img.Archive)+"/") {
			t.Errorf("no archive %s in:\n%s", img.Archive, ls)
		}
	}
	// One archive reads back with its quay.io name.
	dump := filepath.Join(t.TempDir(), "controller.tar")
	for _, img := range cmImages {
		if strings.Contains(img.Ref, "-controller:") {
			debugfs("dump " + img.Archive + " " + dump)
			im, err := readArchive(t, dump).IndexManifest()
			must(t, err)
			if len(im.Manifests) == 0 || im.Manifests[0].Annotations[images.AnnotationImageName] == "" || im.Manifests[0].Digest.String() != img.ManifestDigest {
				t.Errorf("controller archive: %+v", im.Manifests)
			}
			names := ""
			for _, d := range im.Manifests {
				names += d.Annotations[images.AnnotationImageName] + " "
			}
			if !strings.Contains(names, img.Ref+" ") || strings.Contains(names, w.reg.host()) {
				t.Errorf("controller archive names: %s", names)
			}
		}
	}
}

// certManager: {enabled: false} ships none of it.
func TestBuildCertManagerDisabled(t *testing.T) {
	w := newK3sWorld(t)
	res, err := build(t, t.TempDir(), w.spec(t, "certManager: {enabled: false}\n"))
	must(t, err)
	k := res.Report.K3s
	if len(k.Images) != 9 {
		t.Errorf("%d images, want the 8 K3s images and telemetry", len(k.Images))
	}
	for _, img := range k.Images {
		if strings.Contains(img.Ref, "cert-manager") {
			t.Errorf("cert-manager image shipped: %s", img.Ref)
		}
	}
	if slices.Contains(k.Plan.Components, plan.CertManager) {
		t.Errorf("plan counts cert-manager: %+v", k.Plan.Components)
	}
	sys := systemPartition(t, res.Image)
	out, err := exec.Command("debugfs", "-R", "ls -p /"+payload.ManifestsDir, sys).Output()
	must(t, err)
	if strings.Contains(string(out), "cert-manager") || !strings.Contains(string(out), "telemetry.yaml") {
		t.Errorf("manifests:\n%s", out)
	}
}
