package certmanager

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"
)

// charts holds chart-VERSION/cert-manager/ (the chart), chart-VERSION/LICENSE and README.md.
//
//go:embed all:chart-*
var charts embed.FS

// DefaultVersion is the cert-manager release installed when the spec names none.
const DefaultVersion = "v1.16.2"

// Names of what Manifests returns.
const (
	// Namespace is where cert-manager runs and where the CA's key pair is kept.
	Namespace = "cert-manager"
	// ChartFile is the manifest of the HelmChart, IssuersFile the one of the issuers.
	ChartFile   = "edgeimg-cert-manager.yaml"
	IssuersFile = "edgeimg-cert-manager-issuers.yaml"
	// SelfSignedIssuer is the ClusterIssuer that signs the CA certificate.
	SelfSignedIssuer = "edgeimg-selfsigned"
	// CAIssuer is the ClusterIssuer services name in their Certificates; CASecret holds its
	// key pair (in Namespace).
	CAIssuer = "edgeimg-ca"
	CASecret = "edgeimg-ca"
)

// ArchiveTime is the modification time of every file in the chart archive.
var ArchiveTime = time.Unix(0, 0).UTC()

// Versions lists the cert-manager releases this repository has a chart for, sorted.
func Versions() []string {
	entries, _ := fs.ReadDir(charts, ".")
	var out []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "chart-") {
			out = append(out, strings.TrimPrefix(e.Name(), "chart-"))
		}
	}
	sort.Strings(out)
	return out
}

// Chart returns the files of the chart of version, rooted at the chart directory
// (Chart.yaml, values.yaml, templates/…).
func Chart(version string) (fs.FS, error) {
	dir := "chart-" + version + "/cert-manager"
	if _, err := fs.Stat(charts, dir+"/Chart.yaml"); err != nil {
		return nil, fmt.Errorf("cert-manager version %q: no chart in manifests/certmanager (have %s)", version, strings.Join(Versions(), ", "))
	}
	return fs.Sub(charts, dir)
}

// ChartArchive returns the chart of version as a Helm chart archive (.tgz, files under
// cert-manager/), byte for byte the same on every build: files in lexical order, mode 0644,
// owner 0:0, modification time ArchiveTime, a gzip header without name or time.
func ChartArchive(version string) ([]byte, error) {
	chart, err := Chart(version)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	err = fs.WalkDir(chart, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(chart, p)
		if err != nil {
			return err
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: path.Join("cert-manager", p), Mode: 0o644,
			Size: int64(len(data)), ModTime: ArchiveTime, Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		_, err = tw.Write(data)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("packing the cert-manager %s chart: %w", version, err)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Resources of cert-manager's long-running pods, as valuesContent sets them: small,
// single-node figures (one replica each). The memory plan's cert-manager component is their
// requests' sum.
var Resources = []Pod{
	{Key: "", Name: "controller", RequestCPU: "25m", RequestMemory: "64Mi", LimitCPU: "300m", LimitMemory: "256Mi"},
	{Key: "webhook", Name: "webhook", RequestCPU: "10m", RequestMemory: "32Mi", LimitCPU: "100m", LimitMemory: "96Mi"},
	{Key: "cainjector", Name: "cainjector", RequestCPU: "25m", RequestMemory: "64Mi", LimitCPU: "200m", LimitMemory: "256Mi"},
}

// StartupAPICheck are the resources of the post-install Job that waits for the webhook
// (not resident, so not in the plan).
var StartupAPICheck = Pod{Key: "startupapicheck", Name: "startupapicheck", RequestCPU: "10m", RequestMemory: "32Mi", LimitCPU: "100m", LimitMemory: "64Mi"}

// Pod is the resources of one of cert-manager's pods; Key is its section of the chart's
// values ("" for the controller, at the top level).
type Pod struct {
	Key, Name                 string
	RequestCPU, RequestMemory string
	LimitCPU, LimitMemory     string
}

// imageRepos maps a section of the chart's values to its image repository.
var imageRepos = []struct{ key, repo string }{
	{"", "quay.io/jetstack/cert-manager-controller"},
	{"webhook", "quay.io/jetstack/cert-manager-webhook"},
	{"cainjector", "quay.io/jetstack/cert-manager-cainjector"},
	{"acmesolver", "quay.io/jetstack/cert-manager-acmesolver"},
	{"startupapicheck", "quay.io/jetstack/cert-manager-startupapicheck"},
}

// Values returns the HelmChart's valuesContent for version: CRDs installed (and kept when
// the release is removed), every image pinned to the release's tag with pull policy
// IfNotPresent (the images are on the card), requests and limits for every pod, and a
// startup check patient enough for a Raspberry Pi's first boot.
func Values(version string) string {
	var b strings.Builder
	b.WriteString("crds:\n  enabled: true\n  keep: true\n")
	indent := func(key string) string {
		if key == "" {
			return ""
		}
		return "  "
	}
	res := func(p Pod) string {
		in := indent(p.Key)
		return fmt.Sprintf("%sresources:\n%s  requests: {cpu: %s, memory: %s}\n%s  limits: {cpu: %s, memory: %s}\n",
			in, in, p.RequestCPU, p.RequestMemory, in, p.LimitCPU, p.LimitMemory)
	}
	pods := map[string]Pod{StartupAPICheck.Key: StartupAPICheck}
	for _, p := range Resources {
		pods[p.Key] = p
	}
	for _, r := range imageRepos {
		in := indent(r.key)
		if r.key != "" {
			b.WriteString(r.key + ":\n")
		}
		fmt.Fprintf(&b, "%simage:\n%s  repository: %s\n%s  tag: %s\n%s  pullPolicy: IfNotPresent\n", in, in, r.repo, in, version, in)
		if p, ok := pods[r.key]; ok {
			b.WriteString(res(p))
		}
		if r.key == "startupapicheck" {
			b.WriteString("  timeout: 5m\n")
		}
	}
	return b.String()
}

// Manifest is a file of Kubernetes YAML for the K3s manifests directory.
type Manifest struct {
	Name string
	Data []byte
}

// Manifests returns what K3s applies to install cert-manager version: ChartFile, the
// HelmChart with the chart inside (no network), and IssuersFile, the CA chain. K3s applies
// every manifest file on its own; the issuers fail with "no matches for kind" until the
// HelmChart's CRDs exist, then with the webhook unavailable until it runs, and K3s's deploy
// controller applies a file again (every 15 s or so) until it succeeds.
func Manifests(version string) ([]Manifest, error) {
	tgz, err := ChartArchive(version)
	if err != nil {
		return nil, err
	}
	var chart strings.Builder
	fmt.Fprintf(&chart, `# Written by edgeimg: cert-manager %[1]s, installed by K3s's helm-controller from the chart
# inside (chartContent: base64 of the vendored chart's .tgz), with images pre-pulled on the card.
apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata:
  name: cert-manager
  namespace: kube-system
spec:
  targetNamespace: %[2]s
  createNamespace: true
  timeout: 10m0s
  chartContent: %[3]s
  valuesContent: |-
`, version, Namespace, base64.StdEncoding.EncodeToString(tgz))
	for _, l := range strings.Split(strings.TrimSuffix(Values(version), "\n"), "\n") {
		chart.WriteString("    " + l + "\n")
	}
	return []Manifest{{Name: ChartFile, Data: []byte(chart.String())}, {Name: IssuersFile, Data: []byte(Issuers())}}, nil
}

// Issuers returns the CA chain for app-level mTLS: the self-signed ClusterIssuer
// SelfSignedIssuer, a CA Certificate it signs (key pair in Namespace/CASecret, ECDSA P-256,
// ten years, renewed a year before expiry), and the ClusterIssuer CAIssuer that signs
// services' certificates with it.
func Issuers() string {
	return fmt.Sprintf(`# Written by edgeimg: a self-signed CA for app-level mTLS. Services ask for certificates
# with a Certificate whose issuerRef is {kind: ClusterIssuer, name: %[3]s}.
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: %[1]s
spec:
  selfSigned: {}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: %[3]s
  namespace: %[2]s
spec:
  isCA: true
  commonName: %[3]s
  secretName: %[4]s
  duration: 87600h0m0s
  renewBefore: 8760h0m0s
  privateKey:
    algorithm: ECDSA
    size: 256
  issuerRef:
    name: %[1]s
    kind: ClusterIssuer
    group: cert-manager.io
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: %[3]s
spec:
  ca:
    secretName: %[4]s
`, SelfSignedIssuer, Namespace, CAIssuer, CASecret)
}
