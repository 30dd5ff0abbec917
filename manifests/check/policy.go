package check

import (
	"fmt"
	"sort"
	"strings"

	"github.com/edgeimg/edgeimg/images"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Opt-out annotations. Each policy rule is on by default; an object opts out of one rule
// by carrying its annotation with the value "true" in its own metadata (not in a pod
// template). Pinned images (no ":latest", no untagged reference) have no opt-out: such a
// pod could not start offline.
const (
	// AllowNoLimits exempts a workload from "every container and init container has CPU
	// and memory requests and limits".
	AllowNoLimits = "edgeimg.dev/allow-no-limits"
	// AllowHPAWithoutRequests exempts an HPA from "the containers it scales have CPU
	// requests" (without them the HPA cannot compute CPU utilization).
	AllowHPAWithoutRequests = "edgeimg.dev/allow-hpa-without-requests"
	// AllowMissingScaleTarget exempts an HPA from "its scaleTargetRef is in the manifests".
	AllowMissingScaleTarget = "edgeimg.dev/allow-missing-scale-target"
	// AllowPullAlways exempts a workload from "no imagePullPolicy: Always" (which needs the
	// registry at every pod start).
	AllowPullAlways = "edgeimg.dev/allow-pull-always"
	// NoDefaultLimitRange, on a Namespace, stops Check from generating its LimitRange.
	NoDefaultLimitRange = "edgeimg.dev/no-default-limitrange"
	// AllowUnresolvedImages exempts a HelmChart from "every image in its values has a tag".
	AllowUnresolvedImages = "edgeimg.dev/allow-unresolved-images"
)

// RulePinnedImage is the rule name of images that are ":latest", untagged or unparsable.
const RulePinnedImage = "pinned-image"

// Violation is one broken rule.
type Violation struct {
	File      string
	Index     int
	Object    string // "Deployment smart-building/telemetry"
	Container string // empty for object-level rules
	Rule      string // the opt-out annotation, or RulePinnedImage
	Message   string
}

func (v Violation) String() string {
	s := fmt.Sprintf("%s: document %d: %s", v.File, v.Index, v.Object)
	if v.Container != "" {
		s += fmt.Sprintf(": container %q", v.Container)
	}
	s += ": " + v.Message
	if v.Rule != RulePinnedImage {
		s += fmt.Sprintf(" (opt out: annotation %s: \"true\")", v.Rule)
	}
	return s
}

// Violations is the error of Check: every violation, sorted by file, document, container.
type Violations []Violation

func (vs Violations) Error() string {
	lines := make([]string, len(vs))
	for i, v := range vs {
		lines[i] = v.String()
	}
	return fmt.Sprintf("%d manifest policy violation(s):\n  %s", len(vs), strings.Join(lines, "\n  "))
}

// ImageUse is one place an image is referenced.
type ImageUse struct {
	Ref       string
	File      string
	Index     int
	Object    string
	Container string // container name, or the values path / argument it came from
}

// Result is what Check found besides violations.
type Result struct {
	// Images lists every image reference, sorted by Ref, then file and document.
	Images []ImageUse
	// Generated holds the LimitRanges generated for namespaces that have none.
	Generated []Object
	// Notes say what Check generated.
	Notes []string
}

// Default LimitRange values for a namespace that has none.
var (
	DefaultLimitCPU      = resource.MustParse("500m")
	DefaultLimitMemory   = resource.MustParse("256Mi")
	DefaultRequestCPU    = resource.MustParse("100m")
	DefaultRequestMemory = resource.MustParse("128Mi")
)

// DefaultLimitRangeName is the name of generated LimitRanges.
const DefaultLimitRangeName = "edgeimg-default-limits"

// Check applies the policy to decoded objects, finds every image they use and generates
// the missing LimitRanges. The error is Violations when rules are broken.
func Check(objs []Object) (Result, error) {
	var res Result
	var vs Violations
	byKey := map[string]Object{}
	for _, o := range objs {
		byKey[o.GVK.Kind+"/"+o.Namespace()+"/"+o.Meta().GetName()] = o
	}
	limitRanges := map[string]bool{}
	for _, o := range objs {
		if o.GVK.Kind == "LimitRange" {
			limitRanges[o.Namespace()] = true
		}
	}

	for _, o := range objs {
		add := func(container, rule, msg string) {
			vs = append(vs, Violation{File: o.File, Index: o.Index, Object: o.String(), Container: container, Rule: rule, Message: msg})
		}
		use := func(ref, where string) {
			res.Images = append(res.Images, ImageUse{Ref: ref, File: o.File, Index: o.Index, Object: o.String(), Container: where})
			if _, err := images.ParseReference(ref); err != nil {
				add(where, RulePinnedImage, err.Error())
			}
		}
		ann := o.Meta().GetAnnotations()
		optOut := func(a string) bool { return ann[a] == "true" }

		if spec := PodSpec(o.Object); spec != nil {
			for _, c := range containers(spec) {
				for _, ref := range argImages(c.Command, c.Args) {
					use(ref, c.Name+" (argument)")
				}
				if c.Image != "" {
					use(c.Image, c.Name)
				} else if !c.ephemeral {
					add(c.Name, RulePinnedImage, "no image")
				}
				if c.ImagePullPolicy == corev1.PullAlways && !optOut(AllowPullAlways) {
					add(c.Name, AllowPullAlways, "imagePullPolicy: Always needs the registry at every start; use IfNotPresent")
				}
				if c.ephemeral || optOut(AllowNoLimits) {
					continue
				}
				if missing := missingResources(c.Resources); len(missing) > 0 {
					add(c.Name, AllowNoLimits, "missing "+strings.Join(missing, ", "))
				}
			}
		}

		switch t := o.Object.(type) {
		case *autoscalingv2.HorizontalPodAutoscaler:
			ref := t.Spec.ScaleTargetRef
			target, ok := byKey[ref.Kind+"/"+o.Namespace()+"/"+ref.Name]
			if ok && ref.APIVersion != "" {
				gv, err := schema.ParseGroupVersion(ref.APIVersion)
				ok = err == nil && gv == target.GVK.GroupVersion()
			}
			if !ok {
				if !optOut(AllowMissingScaleTarget) {
					add("", AllowMissingScaleTarget, fmt.Sprintf("scaleTargetRef %s %s/%s is not in the manifests", ref.Kind, o.Namespace(), ref.Name))
				}
				break
			}
			if !usesCPU(t) || optOut(AllowHPAWithoutRequests) {
				break
			}
			if spec := PodSpec(target.Object); spec != nil {
				for _, c := range spec.Containers {
					if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
						add(c.Name, AllowHPAWithoutRequests, fmt.Sprintf("scales on CPU but container %q of %s has no CPU request", c.Name, target.String()))
					}
				}
			} else {
				add("", AllowHPAWithoutRequests, fmt.Sprintf("scaleTargetRef %s has no pod template", target.String()))
			}
		case *HelmChart:
			if t.Spec.JobImage != "" {
				use(t.Spec.JobImage, "spec.jobImage")
			}
			valuesImages(t.Spec.ValuesContent, use, func(path, msg string) {
				if !optOut(AllowUnresolvedImages) {
					add(path, AllowUnresolvedImages, msg)
				}
			})
		case *HelmChartConfig:
			valuesImages(t.Spec.ValuesContent, use, func(path, msg string) {
				if !optOut(AllowUnresolvedImages) {
					add(path, AllowUnresolvedImages, msg)
				}
			})
		case *corev1.Namespace:
			if limitRanges[t.Name] || optOut(NoDefaultLimitRange) {
				break
			}
			lr := DefaultLimitRange(t.Name)
			res.Generated = append(res.Generated, Object{
				File: o.File, Index: o.Index, GVK: corev1.SchemeGroupVersion.WithKind("LimitRange"), Object: lr,
			})
			res.Notes = append(res.Notes, fmt.Sprintf("namespace %s has no LimitRange: generated %s (default limits cpu %s memory %s, requests cpu %s memory %s; opt out: annotation %s: \"true\")",
				t.Name, DefaultLimitRangeName, DefaultLimitCPU.String(), DefaultLimitMemory.String(), DefaultRequestCPU.String(), DefaultRequestMemory.String(), NoDefaultLimitRange))
		}
	}

	sort.SliceStable(res.Images, func(i, j int) bool {
		a, b := res.Images[i], res.Images[j]
		if a.Ref != b.Ref {
			return a.Ref < b.Ref
		}
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Index < b.Index
	})
	if len(vs) > 0 {
		sort.SliceStable(vs, func(i, j int) bool {
			a, b := vs[i], vs[j]
			if a.File != b.File {
				return a.File < b.File
			}
			if a.Index != b.Index {
				return a.Index < b.Index
			}
			return a.Container < b.Container
		})
		return res, vs
	}
	return res, nil
}

// DefaultLimitRange is the LimitRange Check generates for a namespace without one.
func DefaultLimitRange(namespace string) *corev1.LimitRange {
	return &corev1.LimitRange{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "LimitRange"},
		ObjectMeta: metav1.ObjectMeta{Name: DefaultLimitRangeName, Namespace: namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "edgeimg"}},
		Spec: corev1.LimitRangeSpec{Limits: []corev1.LimitRangeItem{{
			Type:           corev1.LimitTypeContainer,
			Default:        corev1.ResourceList{corev1.ResourceCPU: DefaultLimitCPU, corev1.ResourceMemory: DefaultLimitMemory},
			DefaultRequest: corev1.ResourceList{corev1.ResourceCPU: DefaultRequestCPU, corev1.ResourceMemory: DefaultRequestMemory},
		}}},
	}
}

// usesCPU reports whether an HPA scales on CPU; an HPA without metrics defaults to 80% CPU.
func usesCPU(h *autoscalingv2.HorizontalPodAutoscaler) bool {
	if len(h.Spec.Metrics) == 0 {
		return true
	}
	for _, m := range h.Spec.Metrics {
		if m.Resource != nil && m.Resource.Name == corev1.ResourceCPU {
			return true
		}
		if m.ContainerResource != nil && m.ContainerResource.Name == corev1.ResourceCPU {
			return true
		}
	}
	return false
}

func missingResources(r corev1.ResourceRequirements) []string {
	var missing []string
	for _, kind := range []struct {
		name string
		list corev1.ResourceList
	}{{"requests", r.Requests}, {"limits", r.Limits}} {
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := kind.list[res]; !ok {
				missing = append(missing, kind.name+"."+string(res))
			}
		}
	}
	return missing
}

// PodSpec returns the pod spec of a workload (Pod, Deployment, StatefulSet, DaemonSet,
// ReplicaSet, ReplicationController, Job, CronJob, PodTemplate), or nil.
func PodSpec(obj any) *corev1.PodSpec {
	switch t := obj.(type) {
	case *corev1.Pod:
		return &t.Spec
	case *corev1.PodTemplate:
		return &t.Template.Spec
	case *corev1.ReplicationController:
		if t.Spec.Template != nil {
			return &t.Spec.Template.Spec
		}
	case *appsv1.Deployment:
		return &t.Spec.Template.Spec
	case *appsv1.StatefulSet:
		return &t.Spec.Template.Spec
	case *appsv1.DaemonSet:
		return &t.Spec.Template.Spec
	case *appsv1.ReplicaSet:
		return &t.Spec.Template.Spec
	case *batchv1.Job:
		return &t.Spec.Template.Spec
	case *batchv1.CronJob:
		return &t.Spec.JobTemplate.Spec.Template.Spec
	}
	return nil
}

type container struct {
	Name, Image     string
	Command, Args   []string
	ImagePullPolicy corev1.PullPolicy
	Resources       corev1.ResourceRequirements
	ephemeral       bool
}

func containers(spec *corev1.PodSpec) []container {
	var out []container
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			out = append(out, container{c.Name, c.Image, c.Command, c.Args, c.ImagePullPolicy, c.Resources, false})
		}
	}
	for _, c := range spec.EphemeralContainers {
		ec := c.EphemeralContainerCommon
		out = append(out, container{ec.Name, ec.Image, ec.Command, ec.Args, ec.ImagePullPolicy, ec.Resources, true})
	}
	return out
}
