// Command k3s-standin is NOT K3s. The end-to-end test installs it at /usr/local/bin/k3s when
// no real linux/arm64 K3s is at hand (EDGEIMG_E2E_K3S unset): real K3s releases cannot be
// downloaded on the build machines. It says so on every start, and the e2e report says that
// K3s itself was not exercised.
//
// What it does is what the rest of the image needs from K3s to be exercised for real: the
// systemd units (Type=notify for the server), the kubeconfig K3s writes, and a small
// Kubernetes API over mutual TLS on 127.0.0.1:6443 that the agent's heartbeat and its
// trial-boot health check query — the node (Ready), the pods on it, and the workloads of the
// manifests K3s would apply from /var/lib/rancher/k3s/server/manifests (reported available:
// nothing runs them). `k3s kubectl get --raw=PATH` reads that API (edgeimg-k3s-prune waits for
// /readyz with it).
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// Banner is printed on every start, so that no log can mistake this for K3s.
const Banner = "k3s-standin: THIS IS NOT K3S — the edgeimg e2e stand-in serving a minimal API; K3s itself is not exercised"

// root prefixes every absolute path (tests run it in a temporary directory).
var root = os.Getenv("K3S_STANDIN_ROOT")

func path(p string) string { return filepath.Join(root, p) }

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "k3s" || name == "k3s-standin" {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, Banner)
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	var err error
	switch name {
	case "server":
		err = server(args)
	case "agent":
		fmt.Fprintln(os.Stderr, Banner)
		fmt.Fprintln(os.Stderr, "k3s-standin: agent role: nothing to join; idling")
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		<-ctx.Done()
	case "kubectl":
		err = kubectl(args)
	case "--version", "-v", "version":
		fmt.Println("k3s version v0.0.0-standin (not K3s)")
	case "crictl", "ctr":
		err = fmt.Errorf("%s is not available in the k3s stand-in", name)
	default:
		err = fmt.Errorf("unknown command %q", name)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "k3s-standin:", err)
		os.Exit(1)
	}
}

// config is what the stand-in reads of K3s's config: config.yaml, then config.yaml.d/*.yaml
// in name order, later keys winning, then the command line's --flag=value.
type config struct {
	Kubeconfig string
	NodeName   string
}

func loadConfig(args []string) (config, error) {
	c := config{Kubeconfig: "/etc/rancher/k3s/k3s.yaml"}
	files := []string{path("/etc/rancher/k3s/config.yaml")}
	drop, _ := filepath.Glob(path("/etc/rancher/k3s/config.yaml.d/*.yaml"))
	sort.Strings(drop)
	for _, f := range append(files, drop...) {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return c, err
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			return c, fmt.Errorf("%s: %w", f, err)
		}
		if v, ok := m["write-kubeconfig"].(string); ok {
			c.Kubeconfig = v
		}
		if v, ok := m["node-name"].(string); ok {
			c.NodeName = v
		}
	}
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--write-kubeconfig="); ok {
			c.Kubeconfig = v
		}
		if v, ok := strings.CutPrefix(a, "--node-name="); ok {
			c.NodeName = v
		}
	}
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, err
		}
		c.NodeName = h
	}
	return c, nil
}

func server(args []string) error {
	fmt.Fprintln(os.Stderr, Banner)
	cfg, err := loadConfig(args)
	if err != nil {
		return err
	}
	ca, caKey, err := newCert(nil, nil, "k3s-standin-ca", true)
	if err != nil {
		return err
	}
	srvCert, srvKey, err := newCert(ca, caKey, "k3s-standin", false)
	if err != nil {
		return err
	}
	cliCert, cliKey, err := newCert(ca, caKey, "system:admin", false)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	addr := os.Getenv("K3S_STANDIN_LISTEN") // tests; K3s listens on 6443
	if addr == "" {
		addr = "127.0.0.1:6443"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvKey}},
		ClientCAs:    pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	}
	srv := &http.Server{Handler: api(cfg.NodeName), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
	go srv.ServeTLS(ln, "", "")

	kc := kubeconfig("https://"+ln.Addr().String(), ca, cliCert, cliKey)
	if err := os.MkdirAll(filepath.Dir(path(cfg.Kubeconfig)), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path(cfg.Kubeconfig), kc, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "k3s-standin: API on https://%s for node %s, kubeconfig %s\n", ln.Addr(), cfg.NodeName, cfg.Kubeconfig)
	if err := notify("READY=1"); err != nil {
		return fmt.Errorf("telling systemd the server is ready: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// notify sends state to systemd's notification socket, when there is one (Type=notify).
func notify(state string) error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return nil
	}
	if strings.HasPrefix(sock, "@") {
		sock = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

func newCert(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	// The device's clock may start anywhere after the build epoch: a wide validity.
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Unix(0, 0), NotAfter: time.Now().AddDate(20, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		IsCA: isCA, BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func kubeconfig(server string, ca, cert *x509.Certificate, key *ecdsa.PrivateKey) []byte {
	enc := func(typ string, der []byte) string {
		return base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: default
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: default
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: default
  context: {cluster: default, user: default}
current-context: default
`, server, enc("CERTIFICATE", ca.Raw), enc("CERTIFICATE", cert.Raw), enc("EC PRIVATE KEY", kd))
}

// workload is a Deployment, StatefulSet, DaemonSet or HelmChart found in the manifests.
type workload struct {
	Kind, Namespace, Name string
	Replicas              int
}

// workloads reads the manifests K3s would apply.
func workloads() []workload {
	files, _ := filepath.Glob(path("/var/lib/rancher/k3s/server/manifests/*.yaml"))
	more, _ := filepath.Glob(path("/var/lib/rancher/k3s/server/manifests/*.yml"))
	var out []workload
	for _, f := range append(files, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o struct {
				Kind     string `yaml:"kind"`
				Metadata struct {
					Name      string `yaml:"name"`
					Namespace string `yaml:"namespace"`
				} `yaml:"metadata"`
				Spec struct {
					Replicas *int `yaml:"replicas"`
				} `yaml:"spec"`
			}
			if err := dec.Decode(&o); err != nil {
				break
			}
			switch o.Kind {
			case "Deployment", "StatefulSet", "DaemonSet", "HelmChart":
				w := workload{Kind: o.Kind, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Replicas: 1}
				if w.Namespace == "" {
					w.Namespace = "default"
				}
				if o.Spec.Replicas != nil {
					w.Replicas = *o.Spec.Replicas
				}
				out = append(out, w)
			}
		}
	}
	return out
}

// api serves the stand-in's Kubernetes API.
func api(node string) http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }
	mux.HandleFunc("GET /readyz", ok)
	mux.HandleFunc("GET /livez", ok)
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]string{"gitVersion": "v0.0.0-standin", "platform": "linux/arm64"})
	})
	mux.HandleFunc("GET /api/v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") != node {
			http.Error(w, `{"kind":"Status","code":404}`, http.StatusNotFound)
			return
		}
		writeJSON(w, map[string]any{
			"kind": "Node", "apiVersion": "v1", "metadata": map[string]any{"name": node},
			"status": map[string]any{"conditions": []map[string]string{{"type": "Ready", "status": "True", "reason": "KubeletReady"}}},
		})
	})
	mux.HandleFunc("GET /api/v1/pods", func(w http.ResponseWriter, r *http.Request) {
		var items []any
		for _, wl := range workloads() {
			if wl.Kind == "HelmChart" {
				continue
			}
			for i := range wl.Replicas {
				items = append(items, map[string]any{
					"metadata": map[string]any{"namespace": wl.Namespace, "name": fmt.Sprintf("%s-standin-%d", wl.Name, i)},
					"spec":     map[string]any{"nodeName": node},
					"status":   map[string]any{"phase": "Running", "conditions": []map[string]string{{"type": "Ready", "status": "True"}}},
				})
			}
		}
		writeJSON(w, map[string]any{"kind": "PodList", "apiVersion": "v1", "items": items})
	})
	for kind, plural := range map[string]string{"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"} {
		mux.HandleFunc("GET /apis/apps/v1/namespaces/{ns}/"+plural+"/{name}", func(w http.ResponseWriter, r *http.Request) {
			for _, wl := range workloads() {
				if wl.Kind == kind && wl.Namespace == r.PathValue("ns") && wl.Name == r.PathValue("name") {
					n := wl.Replicas
					writeJSON(w, map[string]any{
						"kind": kind, "apiVersion": "apps/v1",
						"metadata": map[string]any{"namespace": wl.Namespace, "name": wl.Name, "generation": 1},
						"spec":     map[string]any{"replicas": n},
						"status": map[string]any{"observedGeneration": 1, "replicas": n, "readyReplicas": n, "availableReplicas": n, "updatedReplicas": n,
							"desiredNumberScheduled": n, "numberAvailable": n, "numberReady": n, "currentNumberScheduled": n, "updatedNumberScheduled": n},
					})
					return
				}
			}
			http.Error(w, `{"kind":"Status","code":404}`, http.StatusNotFound)
		})
	}
	// helm-controller installs a HelmChart with the Job helm-install-NAME.
	mux.HandleFunc("GET /apis/batch/v1/namespaces/{ns}/jobs/{name}", func(w http.ResponseWriter, r *http.Request) {
		for _, wl := range workloads() {
			if wl.Kind == "HelmChart" && wl.Namespace == r.PathValue("ns") && "helm-install-"+wl.Name == r.PathValue("name") {
				writeJSON(w, map[string]any{
					"kind": "Job", "apiVersion": "batch/v1",
					"metadata": map[string]any{"namespace": wl.Namespace, "name": r.PathValue("name")},
					"status":   map[string]any{"succeeded": 1, "conditions": []map[string]string{{"type": "Complete", "status": "True"}}},
				})
				return
			}
		}
		http.Error(w, `{"kind":"Status","code":404}`, http.StatusNotFound)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// kubectl implements `get --raw=PATH` against the stand-in's API (with the kubeconfig the
// server wrote, from $KUBECONFIG or /etc/rancher/k3s/k3s.yaml); `delete` has nothing to
// delete in a stand-in that runs nothing and says so.
func kubectl(args []string) error {
	var raw string
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--raw="); ok {
			raw = v
		} else if a == "--raw" && i+1 < len(args) {
			raw = args[i+1]
		}
	}
	if len(args) > 0 && args[0] == "delete" {
		fmt.Fprintln(os.Stderr, "k3s-standin: kubectl delete: the stand-in runs no objects; nothing deleted")
		return nil
	}
	if len(args) == 0 || args[0] != "get" || raw == "" {
		return fmt.Errorf("kubectl %s: only `get --raw=PATH` and `delete` are implemented in the stand-in", strings.Join(args, " "))
	}
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		kc = "/etc/rancher/k3s/k3s.yaml"
	}
	b, err := os.ReadFile(path(kc))
	if err != nil {
		return err
	}
	var k struct {
		Clusters []struct {
			Cluster struct {
				Server string `yaml:"server"`
				CA     string `yaml:"certificate-authority-data"`
			} `yaml:"cluster"`
		} `yaml:"clusters"`
		Users []struct {
			User struct {
				Cert string `yaml:"client-certificate-data"`
				Key  string `yaml:"client-key-data"`
			} `yaml:"user"`
		} `yaml:"users"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil || len(k.Clusters) == 0 || len(k.Users) == 0 {
		return fmt.Errorf("%s: not a kubeconfig the stand-in wrote", kc)
	}
	dec := func(s string) []byte { d, _ := base64.StdEncoding.DecodeString(s); return d }
	pair, err := tls.X509KeyPair(dec(k.Users[0].User.Cert), dec(k.Users[0].User.Key))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(dec(k.Clusters[0].Cluster.CA))
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	resp, err := c.Get(k.Clusters[0].Cluster.Server + raw)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", raw, resp.Status)
	}
	return nil
}
