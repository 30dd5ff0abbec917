package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/heartbeat"
	"github.com/edgeimg/edgeimg/agent/ota"
)

// TestStandIn runs the stand-in as `k3s server` in a temporary root and reads its API with
// the agent's own client: the node is Ready, the manifests' workloads have running pods, and
// `k3s kubectl get --raw=/readyz` answers.
func TestStandIn(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "k3s")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	root := filepath.Join(dir, "root")
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/rancher/k3s/config.yaml", "write-kubeconfig: /var/lib/rancher/k3s/k3s.yaml\n")
	write("etc/rancher/k3s/config.yaml.d/50-role.yaml", "node-name: \"e2e-node\"\n")
	app := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ingest, namespace: smart-building}\nspec: {replicas: 3}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ingest}\n"
	chart := "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: cert-manager, namespace: kube-system}\nspec: {}\n"
	for _, dir := range []string{"var/lib/rancher/k3s/server/manifests", "usr/lib/edgeimg/k3s/manifests"} {
		write(dir+"/app.yaml", app)
		write(dir+"/chart.yaml", chart)
	}
	write("usr/lib/edgeimg/k3s.json", `{"version": "v1.31.4+k3s1", "role": "server"}`)
	write("var/lib/edgeimg/role.json", `{"role": {"kind": "server"}}`)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "server")
	cmd.Env = append(os.Environ(), "K3S_STANDIN_ROOT="+root, "K3S_STANDIN_LISTEN="+addr, "NOTIFY_SOCKET=")
	// The child writes its log straight into a file: once the kubeconfig exists, the banner
	// printed before it is in the file too (a pipe would be copied by a goroutine, later).
	logFile, err := os.Create(filepath.Join(dir, "standin.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stderr = logFile
	log := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	kc := filepath.Join(root, "var/lib/rancher/k3s/k3s.yaml")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(kc); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no kubeconfig after 20 s:\n%s", log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(log(), "THIS IS NOT K3S") {
		t.Errorf("the stand-in does not say what it is: %q", log())
	}
	ready, notReady, err := heartbeat.Kube{Kubeconfig: kc, Node: "e2e-node"}.Status(context.Background())
	if err != nil {
		t.Fatalf("%v\n%s", err, log())
	}
	if !ready || len(notReady) != 0 {
		t.Errorf("node ready %v, not ready pods %v", ready, notReady)
	}
	// The agent's trial-boot health check passes against it.
	if err := ota.K3sHealth(device.Paths{Root: root}, "e2e-node")(context.Background()); err != nil {
		t.Errorf("the agent's K3s health check: %v", err)
	}
	if _, _, err := (heartbeat.Kube{Kubeconfig: kc, Node: "other"}).Status(context.Background()); err == nil {
		t.Error("a node that is not the stand-in's was found")
	}
	kubectl := exec.Command(bin, "kubectl", "get", "--raw=/apis/apps/v1/namespaces/smart-building/deployments/ingest")
	kubectl.Env = append(os.Environ(), "K3S_STANDIN_ROOT="+root, "KUBECONFIG=/var/lib/rancher/k3s/k3s.yaml")
	out, err := kubectl.CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"availableReplicas":3`) {
		t.Errorf("kubectl get --raw: %v: %s", err, out)
	}
	kubectl = exec.Command(bin, "kubectl", "get", "--raw=/apis/batch/v1/namespaces/kube-system/jobs/helm-install-cert-manager")
	kubectl.Env = append(os.Environ(), "K3S_STANDIN_ROOT="+root, "KUBECONFIG=/var/lib/rancher/k3s/k3s.yaml")
	if out, err := kubectl.CombinedOutput(); err != nil || !strings.Contains(string(out), `"succeeded":1`) {
		t.Errorf("the HelmChart's install Job: %v: %s", err, out)
	}
	kubectl = exec.Command(bin, "kubectl", "get", "--raw=/apis/apps/v1/namespaces/smart-building/deployments/gone")
	kubectl.Env = append(os.Environ(), "K3S_STANDIN_ROOT="+root, "KUBECONFIG=/var/lib/rancher/k3s/k3s.yaml")
	if out, err := kubectl.CombinedOutput(); err == nil {
		t.Errorf("kubectl get of a missing deployment succeeded: %s", out)
	}
}
