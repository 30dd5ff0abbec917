package ota

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
)

// fakeKubeAPI stands in for the K3s API server: the objects at their API paths, with
// client-certificate authentication; anything else is a 404 Status.
type fakeKubeAPI struct {
	mu      sync.Mutex
	objects map[string]string
	asked   []string
	srv     *httptest.Server
}

func newFakeKubeAPI(t *testing.T) *fakeKubeAPI {
	t.Helper()
	f := &fakeKubeAPI{objects: map[string]string{}}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, `{"kind":"Status","message":"Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.asked = append(f.asked, r.URL.Path)
		body, ok := f.objects[r.URL.Path]
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"kind":"Status","status":"Failure","message":"not found","reason":"NotFound","code":404}`))
			return
		}
		if code, rest, ok := strings.Cut(body, " "); ok && code == "403" {
			// An answer the API refuses: "403 {Status}".
			w.WriteHeader(http.StatusForbidden)
			body = rest
		}
		w.Write([]byte(body))
	}))
	f.srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeKubeAPI) set(objects map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects, f.asked = objects, nil
}

func (f *fakeKubeAPI) paths() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

// writeKubeconfig writes a kubeconfig for the fake API at file: the server's certificate as
// the authority, and a client certificate.
func (f *fakeKubeAPI) writeKubeconfig(t *testing.T, file string) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "system:admin"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		&x509.Certificate{SerialNumber: big.NewInt(1)}, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	b64 := func(typ string, b []byte) string {
		return base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}))
	}
	kc := "apiVersion: v1\nclusters:\n- cluster:\n    server: " + f.srv.URL + "\n    certificate-authority-data: " + b64("CERTIFICATE", f.srv.Certificate().Raw) +
		"\n  name: default\nusers:\n- name: default\n  user:\n    client-certificate-data: " + b64("CERTIFICATE", der) +
		"\n    client-key-data: " + b64("PRIVATE KEY", keyDER) + "\n"
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
}

func healthFile(t *testing.T, p device.Paths, rel, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p.Path(rel)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Path(rel), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const healthManifests = `apiVersion: v1
kind: Namespace
metadata:
  name: app
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: app
spec:
  replicas: 2
---
# a comment-only document

---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: app
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  namespace: app
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: collector
`

const (
	nodeReady     = `{"kind":"Node","status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True","reason":"KubeletReady"}]}}`
	nodeNotReady  = `{"kind":"Node","status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady","message":"container runtime network not ready"}]}}`
	pathNode      = "/api/v1/nodes/truck-1"
	pathWeb       = "/apis/apps/v1/namespaces/app/deployments/web"
	pathDB        = "/apis/apps/v1/namespaces/app/statefulsets/db"
	pathCollector = "/apis/apps/v1/namespaces/default/daemonsets/collector"
	pathListed    = "/apis/apps/v1/namespaces/x/deployments/listed"
	pathChartJob  = "/apis/batch/v1/namespaces/kube-system/jobs/helm-install-cert-manager"
)

// healthDevice is a K3s server's root with the image's manifests and a kubeconfig for api.
func healthDevice(t *testing.T, api *fakeKubeAPI, role string) device.Paths {
	t.Helper()
	p := device.Paths{Root: t.TempDir()}
	healthFile(t, p, device.K3sInfo, `{"version": "v1.31.4+k3s1"}`)
	healthFile(t, p, device.RoleFile, `{"role": {"kind": "`+role+`"}}`)
	healthFile(t, p, K3sManifestsDir+"/app.yaml", healthManifests)
	healthFile(t, p, K3sManifestsDir+"/list.yml", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: listed, namespace: x}\n")
	healthFile(t, p, K3sManifestsDir+"/cert-manager.yaml", "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: cert-manager\n  namespace: kube-system\nspec:\n  chart: cert-manager\n")
	// Files K3s's deploy controller skips.
	healthFile(t, p, K3sManifestsDir+"/.hidden.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: hidden}\n")
	healthFile(t, p, K3sManifestsDir+"/off.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: off}\n")
	healthFile(t, p, K3sManifestsDir+"/off.yaml.skip", "")
	healthFile(t, p, K3sManifestsDir+"/README.txt", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: readme}\n")
	healthFile(t, p, K3sManifestsDir+"/old.yaml", "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: old}\n")
	kc := p.Path(device.K3sKubeconfig)
	if role == "agent" {
		kc = filepath.Join(p.Path(device.K3sDataDir), "agent/kubelet.kubeconfig")
	}
	api.writeKubeconfig(t, kc)
	return p
}

func TestK3sHealthServer(t *testing.T) {
	ctx := context.Background()
	api := newFakeKubeAPI(t)
	p := healthDevice(t, api, "server")
	check := K3sHealth(p, "truck-1")

	// The trial's first minutes: nothing is ready yet.
	api.set(map[string]string{
		pathNode:      nodeNotReady,
		pathWeb:       `{"metadata":{"generation":2},"spec":{"replicas":2},"status":{"observedGeneration":2,"availableReplicas":1,"updatedReplicas":1}}`,
		pathCollector: `{"metadata":{"generation":1},"status":{"observedGeneration":1,"desiredNumberScheduled":1,"numberAvailable":1,"updatedNumberScheduled":1}}`,
		pathListed:    `{"metadata":{"generation":3},"spec":{"replicas":1},"status":{"observedGeneration":2,"availableReplicas":1,"updatedReplicas":1}}`,
		pathChartJob:  `{"status":{"active":1,"failed":2}}`,
	})
	err := check(ctx)
	if !errors.Is(err, ErrK3sUnhealthy) {
		t.Fatalf("unhealthy K3s: %v", err)
	}
	want := "K3s is not healthy: node truck-1: NotReady (KubeletNotReady: container runtime network not ready); " +
		"Deployment app/web: 1/2 available, 1/2 updated; StatefulSet app/db: not created yet; " +
		"HelmChart kube-system/cert-manager: install Job helm-install-cert-manager has not completed (1 running, 2 failed); " +
		"Deployment x/listed: its latest spec is not rolled out yet"
	if err.Error() != want {
		t.Errorf("error\n%s\nwant\n%s", err, want)
	}
	wantPaths := []string{pathNode, pathWeb, pathDB, pathCollector, pathChartJob, pathListed}
	if got := api.paths(); !slices.Equal(got, wantPaths) {
		t.Errorf("asked for %q\nwant %q", got, wantPaths)
	}

	// Everything up.
	api.set(map[string]string{
		pathNode:      nodeReady,
		pathWeb:       `{"metadata":{"generation":2},"spec":{"replicas":2},"status":{"observedGeneration":2,"availableReplicas":2,"updatedReplicas":2,"readyReplicas":2}}`,
		pathDB:        `{"metadata":{"generation":1},"spec":{"replicas":1},"status":{"observedGeneration":1,"readyReplicas":1,"updatedReplicas":1}}`,
		pathCollector: `{"metadata":{"generation":1},"status":{"observedGeneration":1,"desiredNumberScheduled":1,"numberAvailable":1,"updatedNumberScheduled":1}}`,
		pathListed:    `{"metadata":{"generation":3},"spec":{"replicas":1},"status":{"observedGeneration":3,"availableReplicas":1,"updatedReplicas":1}}`,
		pathChartJob:  `{"status":{"succeeded":1,"conditions":[{"type":"Complete","status":"True"}]}}`,
	})
	if err := check(ctx); err != nil {
		t.Errorf("healthy K3s: %v", err)
	}

	// A StatefulSet rolled out with a partition, and one whose pods are not ready; a failed chart.
	api.set(map[string]string{
		pathNode:      nodeReady,
		pathWeb:       `{"metadata":{"generation":2},"spec":{"replicas":0},"status":{"observedGeneration":2}}`,
		pathDB:        `{"metadata":{"generation":1},"spec":{"replicas":3,"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":2}}},"status":{"observedGeneration":1,"readyReplicas":2,"updatedReplicas":1}}`,
		pathCollector: `{"metadata":{"generation":1},"status":{"observedGeneration":1,"desiredNumberScheduled":1,"numberAvailable":0,"updatedNumberScheduled":1}}`,
		pathListed:    `{"metadata":{"generation":3},"spec":{"replicas":1},"status":{"observedGeneration":3,"availableReplicas":1,"updatedReplicas":1}}`,
		pathChartJob:  `{"status":{"failed":6,"conditions":[{"type":"Failed","status":"True","reason":"BackoffLimitExceeded","message":"Job has reached the specified backoff limit"}]}}`,
	})
	want = "K3s is not healthy: StatefulSet app/db: 2/3 ready; DaemonSet default/collector: 0/1 available; " +
		"HelmChart kube-system/cert-manager: install Job helm-install-cert-manager failed (BackoffLimitExceeded: Job has reached the specified backoff limit)"
	if err := check(ctx); err == nil || err.Error() != want {
		t.Errorf("error\n%v\nwant\n%s", err, want)
	}

	// The API is down.
	api.srv.Close()
	if err := check(ctx); !errors.Is(err, ErrK3sUnhealthy) || !strings.Contains(err.Error(), "the K3s API does not answer") {
		t.Errorf("K3s API down: %v", err)
	}
}

// TestK3sHealthAgent: an agent checks its node only, through the kubelet's kubeconfig.
func TestK3sHealthAgent(t *testing.T) {
	api := newFakeKubeAPI(t)
	p := healthDevice(t, api, "agent")
	api.set(map[string]string{pathNode: nodeReady})
	if err := K3sHealth(p, "truck-1")(context.Background()); err != nil {
		t.Errorf("healthy agent: %v", err)
	}
	if got := api.paths(); !slices.Equal(got, []string{pathNode}) {
		t.Errorf("an agent asked for %q", got)
	}
	api.set(map[string]string{})
	if err := K3sHealth(p, "truck-1")(context.Background()); err == nil || err.Error() != "K3s is not healthy: node truck-1: not created yet" {
		t.Errorf("unregistered node: %v", err)
	}
	api.set(map[string]string{pathNode: `403 {"kind":"Status","message":"nodes \"truck-1\" is forbidden: User \"system:node:other\" cannot get resource \"nodes\""}`})
	want := `K3s is not healthy: node truck-1: GET /api/v1/nodes/truck-1: 403 Forbidden: nodes "truck-1" is forbidden: User "system:node:other" cannot get resource "nodes"`
	if err := K3sHealth(p, "truck-1")(context.Background()); err == nil || err.Error() != want {
		t.Errorf("forbidden:\n%v\nwant\n%s", err, want)
	}
}

// TestK3sHealthNotRunning: without K3s there is nothing to check; with K3s not started or
// without its kubeconfig yet, it is not healthy; a broken manifest is an error of its own.
func TestK3sHealthNotRunning(t *testing.T) {
	ctx := context.Background()
	p := device.Paths{Root: t.TempDir()}
	if err := K3sHealth(p, "truck-1")(ctx); err != nil {
		t.Errorf("an image without K3s: %v", err)
	}
	healthFile(t, p, device.K3sInfo, `{"version": "v1.31.4+k3s1"}`)
	if err := K3sHealth(p, "truck-1")(ctx); !errors.Is(err, ErrK3sUnhealthy) || !strings.Contains(err.Error(), "K3s has not been started") {
		t.Errorf("no role: %v", err)
	}
	healthFile(t, p, device.RoleFile, `{"role": {"kind": "server"}}`)
	if err := K3sHealth(p, "truck-1")(ctx); !errors.Is(err, ErrK3sUnhealthy) || !strings.Contains(err.Error(), "k3s.yaml yet") {
		t.Errorf("no kubeconfig: %v", err)
	}
	healthFile(t, p, K3sManifestsDir+"/bad.yaml", "apiVersion: apps/v1\nkind: Deployment\n---\nmetadata: [unclosed\n")
	err := K3sHealth(p, "truck-1")(ctx)
	if err == nil || errors.Is(err, ErrK3sUnhealthy) || !strings.Contains(err.Error(), "bad.yaml: document 1") {
		t.Errorf("broken manifest: %v", err)
	}
}
