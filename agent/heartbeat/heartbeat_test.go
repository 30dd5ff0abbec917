package heartbeat

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/fleet/api"
)

func TestCollect(t *testing.T) {
	p := device.Paths{Root: t.TempDir()}
	os.MkdirAll(p.Path("proc"), 0o755)
	os.MkdirAll(p.Path(device.StateDir), 0o755)
	os.WriteFile(p.Path(device.MemInfo), []byte("MemTotal:        3884360 kB\nMemFree:          200000 kB\nMemAvailable:    2884360 kB\n"), 0o644)
	os.WriteFile(p.Path(device.Uptime), []byte("12345.67 40000.00\n"), 0o644)
	var hb api.Heartbeat
	errs := Collector{Paths: p}.Collect(context.Background(), &hb)
	if len(errs) != 0 || hb.MemTotal != 3884360*1024 || hb.MemUsed != 1000000*1024 || hb.UptimeSeconds != 12345 || hb.DiskTotal == 0 || hb.DiskUsed > hb.DiskTotal {
		t.Errorf("heartbeat %+v, errors %v", hb, errs)
	}
	if err := hb.Validate(); err != nil {
		t.Error(err)
	}
	os.Remove(p.Path(device.MemInfo))
	if errs := (Collector{Paths: p}).Collect(context.Background(), &api.Heartbeat{}); len(errs) != 1 {
		t.Errorf("errors %v", errs)
	}
}

// TestKubeStatus reads a node's status from a stand-in for the K3s API server (the paths and
// JSON the real one serves, with client-certificate authentication).
func TestKubeStatus(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", 401)
			return
		}
		switch {
		case r.URL.Path == "/api/v1/nodes/truck-42":
			w.Write([]byte(`{"kind":"Node","status":{"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True"}]}}`))
		case r.URL.Path == "/api/v1/pods" && r.URL.Query().Get("fieldSelector") == "spec.nodeName=truck-42":
			w.Write([]byte(`{"kind":"PodList","items":[
{"metadata":{"namespace":"kube-system","name":"coredns-1"},"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}},
{"metadata":{"namespace":"app","name":"web-2"},"status":{"phase":"Running","conditions":[{"type":"Ready","status":"False"}]}},
{"metadata":{"namespace":"app","name":"pull-3"},"status":{"phase":"Pending"}},
{"metadata":{"namespace":"kube-system","name":"helm-install-x"},"status":{"phase":"Succeeded"}}]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()

	_, key, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "system:node:truck-42"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, &x509.Certificate{SerialNumber: big.NewInt(1)}, key.Public(), key)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	dir := t.TempDir()
	// An agent's kubelet.kubeconfig names files; the server's k3s.yaml inlines data. Both forms.
	os.WriteFile(filepath.Join(dir, "client.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	kc := "apiVersion: v1\nclusters:\n- cluster:\n    server: " + srv.URL + "\n    certificate-authority-data: " + base64.StdEncoding.EncodeToString(caPEM) +
		"\n  name: default\nusers:\n- name: default\n  user:\n    client-certificate: client.crt\n    client-key-data: " +
		base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})) + "\n"
	os.WriteFile(filepath.Join(dir, "kubeconfig"), []byte(kc), 0o600)

	ready, notReady, err := Kube{Kubeconfig: filepath.Join(dir, "kubeconfig"), Node: "truck-42"}.Status(context.Background())
	if err != nil || !ready || !slices.Equal(notReady, []string{"app/web-2", "app/pull-3"}) {
		t.Errorf("status %v %v %v", ready, notReady, err)
	}
	if _, _, err := (Kube{Kubeconfig: filepath.Join(dir, "kubeconfig"), Node: "other"}).Status(context.Background()); err == nil {
		t.Error("an unknown node has a status")
	}
}
