package certmanager

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/images"
	"github.com/edgeimg/edgeimg/manifests/check"
	"github.com/edgeimg/edgeimg/manifests/plan"
	"k8s.io/apimachinery/pkg/api/resource"
	sigsyaml "sigs.k8s.io/yaml"
)

func TestVersionsHaveImageLists(t *testing.T) {
	if !slices.Contains(Versions(), DefaultVersion) {
		t.Fatalf("no chart for the default version %s: %v", DefaultVersion, Versions())
	}
	if got, want := Versions(), images.CertManagerVersions(); !slices.Equal(got, want) {
		t.Errorf("charts %v, image lists %v: every chart needs images/certmanager/VERSION.txt and the other way round", got, want)
	}
	if _, err := Chart("v0.0.1"); err == nil || !strings.Contains(err.Error(), DefaultVersion) {
		t.Errorf("unknown version: %v", err)
	}
}

// unpack reads a .tgz into path → content.
func unpack(t *testing.T, tgz []byte) map[string][]byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	if !zr.ModTime.IsZero() || zr.Name != "" {
		t.Errorf("gzip header has name %q time %v", zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	files := map[string][]byte{}
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Mode != 0o644 || !h.ModTime.Equal(ArchiveTime) || h.Typeflag != tar.TypeReg {
			t.Errorf("%s: uid %d gid %d mode %o time %v type %c", h.Name, h.Uid, h.Gid, h.Mode, h.ModTime, h.Typeflag)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = b
		names = append(names, h.Name)
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("archive not in lexical order: %v", names)
	}
	return files
}

func TestChartArchive(t *testing.T) {
	for _, v := range Versions() {
		a, err := ChartArchive(v)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := ChartArchive(v)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: two archives differ", v)
		}
		files := unpack(t, a)
		var meta struct{ Name, Version, AppVersion string }
		if err := sigsyaml.Unmarshal(files["cert-manager/Chart.yaml"], &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Name != "cert-manager" || meta.Version != v || meta.AppVersion != v {
			t.Errorf("Chart.yaml: %+v, want cert-manager %s", meta, v)
		}
		for _, want := range []string{"cert-manager/values.yaml", "cert-manager/values.schema.json", "cert-manager/templates/_helpers.tpl",
			"cert-manager/templates/deployment.yaml", "cert-manager/templates/webhook-deployment.yaml", "cert-manager/templates/cainjector-deployment.yaml"} {
			if files[want] == nil {
				t.Errorf("%s: archive lacks %s", v, want)
			}
		}
		// The CRDs are templates, installed when crds.enabled.
		crds := string(files["cert-manager/templates/crds.yaml"])
		for _, kind := range []string{"Certificate", "CertificateRequest", "Challenge", "ClusterIssuer", "Issuer", "Order"} {
			if !strings.Contains(crds, "\n    kind: "+kind+"\n") {
				t.Errorf("%s: templates/crds.yaml lacks the %s CRD", v, kind)
			}
		}
		if n := strings.Count(crds, "kind: CustomResourceDefinition"); n != 6 || !strings.Contains(crds, "{{- if or .Values.crds.enabled .Values.installCRDs }}") {
			t.Errorf("%s: templates/crds.yaml has %d CRDs or no crds.enabled guard", v, n)
		}
		if len(a) > 512<<10 {
			t.Errorf("%s: chart archive is %d bytes: base64 of it must fit helm-controller's ConfigMap (1 MiB)", v, len(a))
		}
	}
}

// chartImages lists the images of the chart's values.yaml: every map with a repository, with
// the tag the chart defaults to (its appVersion).
func chartImages(t *testing.T, version string) []string {
	chart, err := Chart(version)
	if err != nil {
		t.Fatal(err)
	}
	data, err := fs.ReadFile(chart, "values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := sigsyaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch m := v.(type) {
		case map[string]any:
			if repo, ok := m["repository"].(string); ok {
				if reg, _ := m["registry"].(string); reg != "" {
					repo = reg + "/" + repo
				}
				tag, _ := m["tag"].(string)
				if tag == "" {
					tag = version
				}
				out = append(out, repo+":"+tag)
			}
			for _, e := range m {
				walk(e)
			}
		case []any:
			for _, e := range m {
				walk(e)
			}
		}
	}
	walk(v)
	sort.Strings(out)
	return out
}

// The image list of each version is exactly the images of its chart's values.yaml.
func TestImageListComplete(t *testing.T) {
	for _, v := range Versions() {
		list, err := images.CertManagerImages(v)
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(list)
		if got := chartImages(t, v); !slices.Equal(got, list) || len(list) != 5 {
			t.Errorf("%s: values.yaml images %v, images/certmanager/%s.txt %v", v, got, v, list)
		}
	}
}

// Every key valuesContent sets is one the chart's values.schema.json knows (Helm refuses
// values the schema does not allow), and the images it pins are the release's list.
func TestValuesMatchChart(t *testing.T) {
	for _, v := range Versions() {
		chart, _ := Chart(v)
		raw, err := fs.ReadFile(chart, "values.schema.json")
		if err != nil {
			t.Fatal(err)
		}
		var schema struct {
			Defs map[string]struct {
				Type string `json:"type"`
			} `json:"$defs"`
		}
		if err := json.Unmarshal(raw, &schema); err != nil {
			t.Fatal(err)
		}
		var values map[string]any
		if err := sigsyaml.Unmarshal([]byte(Values(v)), &values); err != nil {
			t.Fatalf("%s: valuesContent: %v", v, err)
		}
		var walk func(prefix string, m map[string]any)
		walk = func(prefix string, m map[string]any) {
			for k, e := range m {
				p := prefix + "." + k
				def, ok := schema.Defs[p]
				if !ok {
					t.Errorf("%s: valuesContent sets %s, unknown to values.schema.json", v, strings.TrimPrefix(p, "helm-values."))
					continue
				}
				sub, isMap := e.(map[string]any)
				switch {
				case isMap && k != "resources":
					walk(p, sub)
				case def.Type != "" && def.Type != "object" && fmt.Sprintf("%T", e) != map[string]string{"string": "string", "boolean": "bool", "number": "float64"}[def.Type]:
					t.Errorf("%s: %s is %T, the schema wants %s", v, p, e, def.Type)
				}
			}
		}
		walk("helm-values", values)
	}
}

func TestManifestsPassThePolicy(t *testing.T) {
	ms, err := Manifests(DefaultVersion)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Name != ChartFile || ms[1].Name != IssuersFile {
		t.Fatalf("manifests: %v", ms)
	}
	var objs []check.Object
	for _, m := range ms {
		o, err := check.Decode(m.Name, m.Data)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o...)
	}
	if len(objs) != 4 {
		t.Fatalf("%d objects, want the HelmChart and three issuer objects", len(objs))
	}
	res, err := check.Check(objs)
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	// Discovery finds the release's images in the HelmChart's values.
	var found []string
	for _, u := range res.Images {
		if u.File != ChartFile {
			t.Errorf("image %s found in %s", u.Ref, u.File)
		}
		found = append(found, u.Ref)
	}
	list, _ := images.CertManagerImages(DefaultVersion)
	sort.Strings(list)
	if !slices.Equal(found, list) {
		t.Errorf("discovered %v, want %v", found, list)
	}

	hc := objs[0].Object.(*check.HelmChart)
	if hc.Spec.TargetNamespace != Namespace || !hc.Spec.CreateNamespace || hc.Spec.Chart != "" || hc.Spec.Repo != "" {
		t.Errorf("HelmChart spec: %+v", hc.Spec)
	}
	tgz, err := base64.StdEncoding.DecodeString(hc.Spec.ChartContent)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ChartArchive(DefaultVersion)
	if !bytes.Equal(tgz, want) {
		t.Error("chartContent is not the chart archive")
	}

	// The CA chain: selfsigned → CA Certificate in cert-manager's namespace → CA issuer.
	self := objs[1].Object.(*check.ClusterIssuer)
	cert := objs[2].Object.(*check.Certificate)
	ca := objs[3].Object.(*check.ClusterIssuer)
	if self.Name != SelfSignedIssuer || self.Spec.SelfSigned == nil ||
		cert.Namespace != Namespace || !cert.Spec.IsCA || cert.Spec.IssuerRef.Name != SelfSignedIssuer || cert.Spec.IssuerRef.Kind != "ClusterIssuer" ||
		ca.Name != CAIssuer || ca.Spec.CA == nil || ca.Spec.CA.SecretName != cert.Spec.SecretName {
		t.Errorf("issuer chain: %+v / %+v / %+v", self, cert.Spec, ca.Spec)
	}
}

// The plan's cert-manager component is the sum of the requests valuesContent sets.
func TestPlanFigures(t *testing.T) {
	var mem, cpu resource.Quantity
	for _, p := range Resources {
		mem.Add(resource.MustParse(p.RequestMemory))
		cpu.Add(resource.MustParse(p.RequestCPU))
		for _, l := range [][2]string{{p.RequestMemory, p.LimitMemory}, {p.RequestCPU, p.LimitCPU}} {
			req, lim := resource.MustParse(l[0]), resource.MustParse(l[1])
			if req.Cmp(lim) > 0 {
				t.Errorf("%s: request %s above limit %s", p.Name, l[0], l[1])
			}
		}
	}
	if mem.Value() != plan.CertManager.Memory || cpu.MilliValue() != plan.CertManager.MilliCPU {
		t.Errorf("requests sum to %s memory %s CPU; plan.CertManager has %d bytes %dm", mem.String(), cpu.String(), plan.CertManager.Memory, plan.CertManager.MilliCPU)
	}
}
