package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/edgeimg/edgeimg/manifests/check"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// MiB is a mebibyte.
const MiB = int64(1) << 20

// Board is what the plan is checked against.
type Board struct {
	// Name is the board variant: "rpi4-4GiB".
	Name string `json:"name"`
	// RAM is the memory of the variant, bytes.
	RAM int64 `json:"ramBytes"`
	// MilliCPU is the CPU capacity: 4000 for the Pi 4's four cores.
	MilliCPU int64 `json:"milliCPU"`
}

// RPi4 returns the Raspberry Pi 4 variant with ramGiB GiB (2, 4 or 8).
func RPi4(ramGiB int) (Board, error) {
	switch ramGiB {
	case 2, 4, 8:
		return Board{Name: fmt.Sprintf("rpi4-%dGiB", ramGiB), RAM: int64(ramGiB) << 30, MilliCPU: 4000}, nil
	}
	return Board{}, fmt.Errorf("hardware.ram: the Raspberry Pi 4 has 2, 4 or 8 GiB, not %d", ramGiB)
}

// Component is a fixed part of the budget (not a Kubernetes workload).
type Component struct {
	Name     string `json:"name"`
	Memory   int64  `json:"memoryBytes"`
	MilliCPU int64  `json:"milliCPU"`
}

// Components of every image. The figures are estimates, not measurements: OS and K3s
// server follow issue 3 (~500 MB, ~730 MB); the others are rough resident sizes and steady-state
// CPU to be replaced by numbers measured on a Pi 4. CertManager is the sum of the requests
// edgeimg's cert-manager HelmChart sets (controller 64Mi/25m, webhook 32Mi/10m, cainjector
// 64Mi/25m; manifests/certmanager checks that they agree).
var (
	OS          = Component{Name: "os (kernel, systemd, journald, firmware reservations)", Memory: 500 * MiB, MilliCPU: 200}
	K3sServer   = Component{Name: "k3s server (apiserver, controllers, kine/sqlite, containerd, kubelet)", Memory: 730 * MiB, MilliCPU: 500}
	K3sAgent    = Component{Name: "k3s agent (containerd, kubelet)", Memory: 280 * MiB, MilliCPU: 200}
	K3sAddons   = Component{Name: "k3s packaged pods (coredns, metrics-server, local-path, traefik)", Memory: 250 * MiB, MilliCPU: 300}
	Agent       = Component{Name: "edgeimg-agent", Memory: 40 * MiB, MilliCPU: 20}
	CertManager = Component{Name: "cert-manager (controller, webhook, cainjector)", Memory: 160 * MiB, MilliCPU: 60}
)

// Workload is one workload of the manifests in the plan.
type Workload struct {
	Object string `json:"object"`
	// HPA names the HorizontalPodAutoscaler scaling it, if any.
	HPA         string `json:"hpa,omitempty"`
	MinReplicas int32  `json:"minReplicas"`
	MaxReplicas int32  `json:"maxReplicas"`
	// Per pod: effective requests and limits (max of init containers and the sum of containers).
	PodRequestMemory int64 `json:"podRequestMemoryBytes"`
	PodLimitMemory   int64 `json:"podLimitMemoryBytes"`
	PodRequestCPU    int64 `json:"podRequestMilliCPU"`
	PodLimitCPU      int64 `json:"podLimitMilliCPU"`
}

// Plan is the budget.
type Plan struct {
	Board      Board       `json:"board"`
	Components []Component `json:"components"`
	Workloads  []Workload  `json:"workloads"`
	// Totals: components plus the workloads' requests at min and max replicas, and limits at max.
	MemoryRequestsMin int64 `json:"memoryRequestsMinBytes"`
	MemoryRequestsMax int64 `json:"memoryRequestsMaxBytes"`
	MemoryLimitsMax   int64 `json:"memoryLimitsMaxBytes"`
	CPURequestsMin    int64 `json:"cpuRequestsMinMilli"`
	CPURequestsMax    int64 `json:"cpuRequestsMaxMilli"`
	// Fits is whether the requests at max replicas fit the board's RAM and CPU.
	Fits bool `json:"fits"`
	// Overflow explains what does not fit, when Fits is false.
	Overflow []string `json:"overflow,omitempty"`
}

// Options tune Make.
type Options struct {
	// Role is "server" (default) or "agent": which K3s component is budgeted.
	Role string
	// CertManager adds cert-manager to the budget.
	CertManager bool
	// Extra components (other system services).
	Extra []Component
}

// Make computes the plan of checked objects on board.
func Make(board Board, objs []check.Object, opts Options) Plan {
	p := Plan{Board: board, Components: []Component{OS}}
	if opts.Role == "agent" {
		p.Components = append(p.Components, K3sAgent)
	} else {
		p.Components = append(p.Components, K3sServer, K3sAddons)
	}
	p.Components = append(p.Components, Agent)
	if opts.CertManager {
		p.Components = append(p.Components, CertManager)
	}
	p.Components = append(p.Components, opts.Extra...)

	hpas := map[string]*autoscalingv2.HorizontalPodAutoscaler{}
	hpaName := map[string]string{}
	for _, o := range objs {
		if h, ok := o.Object.(*autoscalingv2.HorizontalPodAutoscaler); ok {
			key := h.Spec.ScaleTargetRef.Kind + " " + o.Namespace() + "/" + h.Spec.ScaleTargetRef.Name
			hpas[key] = h
			hpaName[key] = o.String()
		}
	}
	for _, o := range objs {
		spec := check.PodSpec(o.Object)
		if spec == nil {
			continue
		}
		if _, isJob := o.Object.(*batchv1.Job); isJob {
			continue // runs to completion; not resident
		}
		if _, isCron := o.Object.(*batchv1.CronJob); isCron {
			continue
		}
		w := Workload{Object: o.String()}
		w.PodRequestMemory, w.PodRequestCPU = podResources(spec, false)
		w.PodLimitMemory, w.PodLimitCPU = podResources(spec, true)
		n := replicas(o)
		w.MinReplicas, w.MaxReplicas = n, n
		if h, ok := hpas[o.String()]; ok {
			w.HPA = hpaName[o.String()]
			w.MinReplicas = 1
			if h.Spec.MinReplicas != nil {
				w.MinReplicas = *h.Spec.MinReplicas
			}
			w.MaxReplicas = h.Spec.MaxReplicas
		}
		p.Workloads = append(p.Workloads, w)
	}
	sort.Slice(p.Workloads, func(i, j int) bool { return p.Workloads[i].Object < p.Workloads[j].Object })

	var fixedMem, fixedCPU int64
	for _, c := range p.Components {
		fixedMem += c.Memory
		fixedCPU += c.MilliCPU
	}
	p.MemoryRequestsMin, p.MemoryRequestsMax, p.MemoryLimitsMax = fixedMem, fixedMem, fixedMem
	p.CPURequestsMin, p.CPURequestsMax = fixedCPU, fixedCPU
	for _, w := range p.Workloads {
		p.MemoryRequestsMin += int64(w.MinReplicas) * w.PodRequestMemory
		p.MemoryRequestsMax += int64(w.MaxReplicas) * w.PodRequestMemory
		p.MemoryLimitsMax += int64(w.MaxReplicas) * w.PodLimitMemory
		p.CPURequestsMin += int64(w.MinReplicas) * w.PodRequestCPU
		p.CPURequestsMax += int64(w.MaxReplicas) * w.PodRequestCPU
	}
	p.Fits = true
	if over := p.MemoryRequestsMax - board.RAM; over > 0 {
		p.Fits = false
		p.Overflow = append(p.Overflow, fmt.Sprintf("memory requests at max replicas are %s, %s more than the %s of %s", human(p.MemoryRequestsMax), human(over), human(board.RAM), board.Name))
		p.Overflow = append(p.Overflow, culprits(p.Workloads, over, func(w Workload) int64 { return w.PodRequestMemory }, human)...)
	}
	if over := p.CPURequestsMax - board.MilliCPU; over > 0 {
		p.Fits = false
		milli := func(v int64) string { return fmt.Sprintf("%dm", v) }
		p.Overflow = append(p.Overflow, fmt.Sprintf("CPU requests at max replicas are %dm, %dm more than the %dm of %s", p.CPURequestsMax, over, board.MilliCPU, board.Name))
		p.Overflow = append(p.Overflow, culprits(p.Workloads, over, func(w Workload) int64 { return w.PodRequestCPU }, milli)...)
	}
	return p
}

// culprits names the HPAs whose scaling beyond their minimum adds to the overflow.
func culprits(ws []Workload, over int64, per func(Workload) int64, format func(int64) string) []string {
	var out []string
	for _, w := range ws {
		if w.HPA == "" || w.MaxReplicas <= w.MinReplicas || per(w) == 0 {
			continue
		}
		growth := int64(w.MaxReplicas-w.MinReplicas) * per(w)
		fit := w.MaxReplicas - int32((over+per(w)-1)/per(w))
		s := fmt.Sprintf("%s scaling %s from %d to %d replicas adds %s", w.HPA, w.Object, w.MinReplicas, w.MaxReplicas, format(growth))
		if fit >= w.MinReplicas {
			s += fmt.Sprintf("; at most %d replicas fit", fit)
		}
		out = append(out, s)
	}
	return out
}

// Error is the error of Check: the plan does not fit.
type Error struct{ Plan Plan }

func (e *Error) Error() string {
	return "the payload does not fit " + e.Plan.Board.Name + ": " + strings.Join(e.Plan.Overflow, "; ") + " (set plan.allowOvercommit to build anyway)"
}

// Check returns an *Error when p does not fit, unless allowOvercommit.
func Check(p Plan, allowOvercommit bool) error {
	if p.Fits || allowOvercommit {
		return nil
	}
	return &Error{Plan: p}
}

func replicas(o check.Object) int32 {
	var r *int32
	switch t := o.Object.(type) {
	case *appsv1.Deployment:
		r = t.Spec.Replicas
	case *appsv1.StatefulSet:
		r = t.Spec.Replicas
	case *appsv1.ReplicaSet:
		r = t.Spec.Replicas
	case *corev1.ReplicationController:
		r = t.Spec.Replicas
	}
	if r == nil {
		return 1 // default replicas, a single node's DaemonSet pod, a Pod
	}
	return *r
}

// podResources returns a pod's effective memory (bytes) and CPU (milli) requests or limits:
// the larger of the largest init container and the sum of the containers, as the scheduler
// counts them. Missing values count as zero.
func podResources(spec *corev1.PodSpec, limits bool) (mem, cpu int64) {
	get := func(r corev1.ResourceRequirements) corev1.ResourceList {
		if limits {
			return r.Limits
		}
		return r.Requests
	}
	for _, c := range spec.Containers {
		l := get(c.Resources)
		mem += l.Memory().Value()
		cpu += l.Cpu().MilliValue()
	}
	for _, c := range spec.InitContainers {
		l := get(c.Resources)
		mem = max(mem, l.Memory().Value())
		cpu = max(cpu, l.Cpu().MilliValue())
	}
	if spec.Overhead != nil {
		mem += spec.Overhead.Memory().Value()
		cpu += spec.Overhead.Cpu().MilliValue()
	}
	return mem, cpu
}

func human(b int64) string {
	if b >= 1<<30 {
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	}
	return fmt.Sprintf("%d MiB", (b+MiB-1)/MiB)
}

// WriteTable writes the plan as a human-readable table.
func (p Plan) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "BUDGET ON %s (%s RAM, %dm CPU)\n", p.Board.Name, human(p.Board.RAM), p.Board.MilliCPU)
	fmt.Fprintf(tw, "ITEM\tREPLICAS\tMEM REQ (min..max)\tMEM LIMIT (max)\tCPU REQ (min..max)\n")
	for _, c := range p.Components {
		fmt.Fprintf(tw, "%s\t-\t%s\t%s\t%dm\n", c.Name, human(c.Memory), human(c.Memory), c.MilliCPU)
	}
	for _, wl := range p.Workloads {
		name := wl.Object
		if wl.HPA != "" {
			name += " (" + wl.HPA + ")"
		}
		fmt.Fprintf(tw, "%s\t%d..%d\t%s..%s\t%s\t%dm..%dm\n", name, wl.MinReplicas, wl.MaxReplicas,
			human(int64(wl.MinReplicas)*wl.PodRequestMemory), human(int64(wl.MaxReplicas)*wl.PodRequestMemory),
			human(int64(wl.MaxReplicas)*wl.PodLimitMemory),
			int64(wl.MinReplicas)*wl.PodRequestCPU, int64(wl.MaxReplicas)*wl.PodRequestCPU)
	}
	fmt.Fprintf(tw, "TOTAL\t\t%s..%s\t%s\t%dm..%dm\n", human(p.MemoryRequestsMin), human(p.MemoryRequestsMax), human(p.MemoryLimitsMax), p.CPURequestsMin, p.CPURequestsMax)
	if p.Fits {
		fmt.Fprintf(tw, "FITS: requests at max replicas leave %s free\n", human(p.Board.RAM-p.MemoryRequestsMax))
	} else {
		fmt.Fprintf(tw, "DOES NOT FIT:\n")
		for _, o := range p.Overflow {
			fmt.Fprintf(tw, "  %s\n", o)
		}
	}
	if p.MemoryLimitsMax > p.Board.RAM {
		fmt.Fprintf(tw, "note: limits at max replicas (%s) exceed RAM: pods may be OOM-killed under full load\n", human(p.MemoryLimitsMax))
	}
	return tw.Flush()
}

// WriteJSON writes the plan as indented JSON.
func (p Plan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}
