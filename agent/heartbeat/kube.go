package heartbeat

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Kube reads a node's status from the local Kubernetes API (K3s) with a kubeconfig's client
// certificate: the server's /var/lib/rancher/k3s/k3s.yaml, or an agent's
// /var/lib/rancher/k3s/agent/kubelet.kubeconfig (the kubelet may read its node and its pods).
type Kube struct {
	// Kubeconfig is the kubeconfig file's path.
	Kubeconfig string
	// Node is the node's name.
	Node string
}

type kubeconfig struct {
	Clusters []struct {
		Cluster struct {
			Server string `yaml:"server"`
			CA     string `yaml:"certificate-authority"`
			CAData string `yaml:"certificate-authority-data"`
		} `yaml:"cluster"`
	} `yaml:"clusters"`
	Users []struct {
		User struct {
			Cert     string `yaml:"client-certificate"`
			CertData string `yaml:"client-certificate-data"`
			Key      string `yaml:"client-key"`
			KeyData  string `yaml:"client-key-data"`
		} `yaml:"user"`
	} `yaml:"users"`
}

// data returns inline base64 data or the file's content (relative to the kubeconfig's dir).
func data(inline, file, dir string) ([]byte, error) {
	if inline != "" {
		return base64.StdEncoding.DecodeString(inline)
	}
	if file == "" {
		return nil, nil
	}
	if !filepath.IsAbs(file) {
		file = filepath.Join(dir, file)
	}
	return os.ReadFile(file)
}

func (k Kube) client() (*http.Client, string, error) {
	b, err := os.ReadFile(k.Kubeconfig)
	if err != nil {
		return nil, "", fmt.Errorf("reading the kubeconfig: %w", err)
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, "", fmt.Errorf("%s: %w", k.Kubeconfig, err)
	}
	if len(kc.Clusters) == 0 || len(kc.Users) == 0 {
		return nil, "", fmt.Errorf("%s: no cluster or user", k.Kubeconfig)
	}
	dir := filepath.Dir(k.Kubeconfig)
	cl, u := kc.Clusters[0].Cluster, kc.Users[0].User
	caPEM, err := data(cl.CAData, cl.CA, dir)
	if err != nil {
		return nil, "", fmt.Errorf("%s: certificate authority: %w", k.Kubeconfig, err)
	}
	certPEM, err := data(u.CertData, u.Cert, dir)
	if err != nil {
		return nil, "", fmt.Errorf("%s: client certificate: %w", k.Kubeconfig, err)
	}
	keyPEM, err := data(u.KeyData, u.Key, dir)
	if err != nil {
		return nil, "", fmt.Errorf("%s: client key: %w", k.Kubeconfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, "", fmt.Errorf("%s: no certificate authority", k.Kubeconfig)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, "", fmt.Errorf("%s: client certificate: %w", k.Kubeconfig, err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, strings.TrimRight(cl.Server, "/"), nil
}

func get(ctx context.Context, c *http.Client, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 32<<20)).Decode(out)
}

// Status returns whether the node is Ready and its pods that are not (namespace/name).
func (k Kube) Status(ctx context.Context) (bool, []string, error) {
	if k.Node == "" {
		return false, nil, errors.New("no node name")
	}
	c, server, err := k.client()
	if err != nil {
		return false, nil, err
	}
	defer c.CloseIdleConnections()
	var node struct {
		Status struct {
			Conditions []struct{ Type, Status string } `json:"conditions"`
		} `json:"status"`
	}
	if err := get(ctx, c, server+"/api/v1/nodes/"+url.PathEscape(k.Node), &node); err != nil {
		return false, nil, err
	}
	ready := false
	for _, cond := range node.Status.Conditions {
		if cond.Type == "Ready" {
			ready = cond.Status == "True"
		}
	}
	var pods struct {
		Items []struct {
			Metadata struct{ Namespace, Name string } `json:"metadata"`
			Status   struct {
				Phase      string                          `json:"phase"`
				Conditions []struct{ Type, Status string } `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	q := url.Values{"fieldSelector": {"spec.nodeName=" + k.Node}}
	if err := get(ctx, c, server+"/api/v1/pods?"+q.Encode(), &pods); err != nil {
		return ready, nil, err
	}
	var notReady []string
	for _, p := range pods.Items {
		if p.Status.Phase == "Succeeded" {
			continue
		}
		ok := p.Status.Phase == "Running"
		podReady := false
		for _, cond := range p.Status.Conditions {
			if cond.Type == "Ready" {
				podReady = cond.Status == "True"
			}
		}
		if !ok || !podReady {
			notReady = append(notReady, p.Metadata.Namespace+"/"+p.Metadata.Name)
		}
	}
	return ready, notReady, nil
}
