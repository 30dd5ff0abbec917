package ota

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/heartbeat"
	"github.com/edgeimg/edgeimg/agent/k3s"
	"github.com/edgeimg/edgeimg/fleet/api"
)

// K3sManifestsDir holds the Kubernetes manifests the image ships (relative to
// device.Paths.Root), in the read-only system slot; edgeimg-k3s-prepare copies them into
// /var/lib/rancher/k3s/server/manifests, where K3s applies them. The health check reads the
// slot's, so it checks what the release being tried ships.
const K3sManifestsDir = "usr/lib/edgeimg/k3s/manifests"

// ErrK3sUnhealthy is wrapped by the error of K3sHealth's check when K3s is not healthy (yet):
// it is not running, its API does not answer, the node is not Ready, or a workload is not
// available. Other errors mean the check could not be made (an unreadable manifest, say).
var ErrK3sUnhealthy = errors.New("K3s is not healthy")

// K3sHealth returns the trial boot's health check of K3s: nil when the K3s node is Ready and,
// on a K3s server, every workload of the image's manifests (K3sManifestsDir) is available;
// else an error wrapping ErrK3sUnhealthy that says what is not. The caller polls it until the
// trial's deadline.
//
//   - An image without K3s (no device.K3sInfo) is healthy as far as K3s goes: the check returns
//     nil and does nothing (the caller decides what else a healthy trial needs).
//   - No role applied yet (role.json): K3s has not been started, which is not healthy.
//   - node is the K3s node's name; "" is the host name, which K3s names the node after.
//   - A server reads its API with /var/lib/rancher/k3s/k3s.yaml and checks the node and the
//     workloads. An agent reads the node through its kubelet's kubeconfig
//     (agent/kubelet.kubeconfig), which may read its own node but not the cluster's
//     workloads, and the workloads are its server's to run (the image's manifests are
//     applied by servers only): an agent checks that its node is Ready, nothing more.
//   - Workloads: Deployments (available and updated replicas ≥ spec.replicas),
//     StatefulSets (ready replicas ≥ spec.replicas, and updated ones for a RollingUpdate
//     without a partition) and DaemonSets (available and updated pods ≥ the desired number
//     scheduled), each also needing the controller to have observed its latest generation;
//     and HelmCharts, whose helm-controller install Job (helm-install-NAME in the chart's
//     namespace) must have completed. The workloads a chart installs are not checked one by
//     one: only rendering the chart could name them. Objects inside a kind: List are checked
//     too; other kinds are not workloads.
func K3sHealth(p device.Paths, node string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if !k3s.Installed(p) {
			return nil
		}
		applied, err := k3s.LoadApplied(p)
		if err != nil {
			return err
		}
		if applied == nil {
			return fmt.Errorf("%w: K3s has not been started (no role applied in %s)", ErrK3sUnhealthy, p.Path(device.RoleFile))
		}
		name := node
		if name == "" {
			if name, err = os.Hostname(); err != nil {
				return fmt.Errorf("naming the K3s node: %w", err)
			}
		}
		server := applied.Role.Kind != api.RoleAgent
		kubeconfig := p.Path(device.K3sKubeconfig)
		var workloads []workload
		if server {
			if workloads, err = shippedWorkloads(p); err != nil {
				return err
			}
		} else {
			kubeconfig = filepath.Join(p.Path(device.K3sDataDir), "agent/kubelet.kubeconfig")
		}
		if _, err := os.Stat(kubeconfig); err != nil {
			return fmt.Errorf("%w: K3s has not written %s yet", ErrK3sUnhealthy, kubeconfig)
		}
		client, err := heartbeat.Kube{Kubeconfig: kubeconfig, Node: name}.API()
		if err != nil {
			return err
		}
		defer client.Close()

		var problems []string
		problem, err := nodeProblem(ctx, client, name)
		if err != nil {
			return fmt.Errorf("%w: the K3s API does not answer: %v", ErrK3sUnhealthy, err)
		}
		if problem != "" {
			problems = append(problems, problem)
		}
		for _, w := range workloads {
			problem, err := w.problem(ctx, client)
			if err != nil {
				return fmt.Errorf("%w: the K3s API does not answer: %v", ErrK3sUnhealthy, err)
			}
			if problem != "" {
				problems = append(problems, problem)
			}
		}
		if len(problems) > 0 {
			return fmt.Errorf("%w: %s", ErrK3sUnhealthy, strings.Join(problems, "; "))
		}
		return nil
	}
}

// nodeProblem says what keeps the node from being Ready, or "". err is set only when the API
// could not be asked.
func nodeProblem(ctx context.Context, c *heartbeat.API, name string) (string, error) {
	var n struct {
		Status struct {
			Conditions []struct{ Type, Status, Reason, Message string } `json:"conditions"`
		} `json:"status"`
	}
	err := c.Get(ctx, "/api/v1/nodes/"+url.PathEscape(name), &n)
	if problem, err := apiProblem("node "+name, err); problem != "" || err != nil {
		return problem, err
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type != "Ready" {
			continue
		}
		if cond.Status == "True" {
			return "", nil
		}
		s := "node " + name + ": Ready is " + cond.Status
		if cond.Status == "False" {
			s = "node " + name + ": NotReady"
		}
		if cond.Reason != "" || cond.Message != "" {
			s += " (" + strings.TrimPrefix(cond.Reason+": "+cond.Message, ": ") + ")"
		}
		return s, nil
	}
	return "node " + name + ": no Ready condition yet", nil
}

// apiProblem turns the error of a GET into a problem (an object that does not exist yet, an
// answer other than 200) or an error (no answer at all).
func apiProblem(what string, err error) (string, error) {
	var ae *heartbeat.APIError
	switch {
	case err == nil:
		return "", nil
	case errors.As(err, &ae) && ae.StatusCode == 404:
		return what + ": not created yet", nil
	case errors.As(err, &ae):
		return what + ": " + ae.Error(), nil
	}
	return "", err
}

// workload is an object of the image's manifests whose health is checked.
type workload struct {
	Kind, Namespace, Name string
	// File is the manifest file it comes from.
	File string
}

func (w workload) String() string { return w.Kind + " " + w.Namespace + "/" + w.Name }

// workloadKinds maps the checked kinds to their API group version and resource.
var workloadKinds = map[string]struct{ APIVersion, Resource string }{
	"Deployment":  {"apps/v1", "deployments"},
	"StatefulSet": {"apps/v1", "statefulsets"},
	"DaemonSet":   {"apps/v1", "daemonsets"},
	"HelmChart":   {"helm.cattle.io/v1", "helmcharts"},
}

// problem says what keeps the workload from being available, or "".
func (w workload) problem(ctx context.Context, c *heartbeat.API) (string, error) {
	var o struct {
		Metadata struct {
			Generation int64 `json:"generation"`
		} `json:"metadata"`
		Spec struct {
			Replicas       *int32 `json:"replicas"`
			UpdateStrategy struct {
				Type          string `json:"type"`
				RollingUpdate *struct {
					Partition *int32 `json:"partition"`
				} `json:"rollingUpdate"`
			} `json:"updateStrategy"`
		} `json:"spec"`
		Status struct {
			ObservedGeneration     int64 `json:"observedGeneration"`
			AvailableReplicas      int32 `json:"availableReplicas"`
			ReadyReplicas          int32 `json:"readyReplicas"`
			UpdatedReplicas        int32 `json:"updatedReplicas"`
			DesiredNumberScheduled int32 `json:"desiredNumberScheduled"`
			NumberAvailable        int32 `json:"numberAvailable"`
			UpdatedNumberScheduled int32 `json:"updatedNumberScheduled"`
			// A Job's.
			Succeeded  int32                                            `json:"succeeded"`
			Active     int32                                            `json:"active"`
			Failed     int32                                            `json:"failed"`
			Conditions []struct{ Type, Status, Reason, Message string } `json:"conditions"`
		} `json:"status"`
	}
	if w.Kind == "HelmChart" {
		job := "helm-install-" + w.Name
		err := c.Get(ctx, "/apis/batch/v1/namespaces/"+url.PathEscape(w.Namespace)+"/jobs/"+url.PathEscape(job), &o)
		if problem, err := apiProblem(w.String()+": install Job "+job, err); problem != "" || err != nil {
			return problem, err
		}
		if o.Status.Succeeded > 0 {
			return "", nil
		}
		for _, cond := range o.Status.Conditions {
			if cond.Type == "Complete" && cond.Status == "True" {
				return "", nil
			}
			if cond.Type == "Failed" && cond.Status == "True" {
				return fmt.Sprintf("%s: install Job %s failed (%s)", w, job, strings.TrimPrefix(cond.Reason+": "+cond.Message, ": ")), nil
			}
		}
		return fmt.Sprintf("%s: install Job %s has not completed (%d running, %d failed)", w, job, o.Status.Active, o.Status.Failed), nil
	}
	k := workloadKinds[w.Kind]
	err := c.Get(ctx, "/apis/"+k.APIVersion+"/namespaces/"+url.PathEscape(w.Namespace)+"/"+k.Resource+"/"+url.PathEscape(w.Name), &o)
	if problem, err := apiProblem(w.String(), err); problem != "" || err != nil {
		return problem, err
	}
	var notes []string
	if o.Status.ObservedGeneration < o.Metadata.Generation {
		notes = append(notes, "its latest spec is not rolled out yet")
	}
	desired := int32(1)
	if o.Spec.Replicas != nil {
		desired = *o.Spec.Replicas
	}
	switch w.Kind {
	case "Deployment":
		if o.Status.AvailableReplicas < desired {
			notes = append(notes, fmt.Sprintf("%d/%d available", o.Status.AvailableReplicas, desired))
		}
		if o.Status.UpdatedReplicas < desired {
			notes = append(notes, fmt.Sprintf("%d/%d updated", o.Status.UpdatedReplicas, desired))
		}
	case "StatefulSet":
		if o.Status.ReadyReplicas < desired {
			notes = append(notes, fmt.Sprintf("%d/%d ready", o.Status.ReadyReplicas, desired))
		}
		rolling := o.Spec.UpdateStrategy.Type == "" || o.Spec.UpdateStrategy.Type == "RollingUpdate"
		partitioned := o.Spec.UpdateStrategy.RollingUpdate != nil && o.Spec.UpdateStrategy.RollingUpdate.Partition != nil && *o.Spec.UpdateStrategy.RollingUpdate.Partition > 0
		if rolling && !partitioned && o.Status.UpdatedReplicas < desired {
			notes = append(notes, fmt.Sprintf("%d/%d updated", o.Status.UpdatedReplicas, desired))
		}
	case "DaemonSet":
		want := o.Status.DesiredNumberScheduled
		if o.Status.NumberAvailable < want {
			notes = append(notes, fmt.Sprintf("%d/%d available", o.Status.NumberAvailable, want))
		}
		if (o.Spec.UpdateStrategy.Type == "" || o.Spec.UpdateStrategy.Type == "RollingUpdate") && o.Status.UpdatedNumberScheduled < want {
			notes = append(notes, fmt.Sprintf("%d/%d updated", o.Status.UpdatedNumberScheduled, want))
		}
	}
	if len(notes) == 0 {
		return "", nil
	}
	return w.String() + ": " + strings.Join(notes, ", "), nil
}

// manifestDoc is what the health check reads of a manifest's YAML document.
type manifestDoc struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	// Items are a kind: List's objects.
	Items []manifestDoc `yaml:"items"`
}

// shippedWorkloads lists the workloads of the manifests in K3sManifestsDir, as K3s's deploy
// controller picks the files: .yaml, .yml and .json files, but not dot files nor a file
// with a NAME.skip beside it; sorted by file, then in document order.
func shippedWorkloads(p device.Paths) ([]workload, error) {
	dir := p.Path(K3sManifestsDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the image's K3s manifests: %w", err)
	}
	var out []workload
	for _, e := range entries {
		name := e.Name()
		ext := strings.ToLower(filepath.Ext(name))
		if e.IsDir() || strings.HasPrefix(name, ".") || !slices.Contains([]string{".yaml", ".yml", ".json"}, ext) {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, name+".skip")); err == nil {
			continue
		}
		file := filepath.Join(dir, name)
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("reading the image's K3s manifests: %w", err)
		}
		ws, err := manifestWorkloads(f, file)
		f.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, ws...)
	}
	return out, nil
}

// manifestWorkloads decodes the YAML documents of one manifest file.
func manifestWorkloads(r io.Reader, file string) ([]workload, error) {
	var out []workload
	var add func(d manifestDoc)
	add = func(d manifestDoc) {
		if k, ok := workloadKinds[d.Kind]; ok && d.APIVersion == k.APIVersion && d.Metadata.Name != "" {
			ns := d.Metadata.Namespace
			if ns == "" {
				ns = "default"
			}
			out = append(out, workload{Kind: d.Kind, Namespace: ns, Name: d.Metadata.Name, File: file})
		}
		if strings.HasSuffix(d.Kind, "List") {
			for _, item := range d.Items {
				add(item)
			}
		}
	}
	dec := yaml.NewDecoder(r)
	for i := 0; ; i++ {
		var d manifestDoc
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		add(d)
	}
}
