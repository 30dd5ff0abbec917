package check

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/manifests"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
)

func TestExampleDecodesAndPasses(t *testing.T) {
	objs, err := Decode("manifests/telemetry.yaml", manifests.Telemetry)
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{}
	for _, o := range objs {
		kinds = append(kinds, o.String())
	}
	if got := strings.Join(kinds, ", "); got != "Namespace smart-building, LimitRange smart-building/defaults, Deployment smart-building/telemetry, Service smart-building/telemetry, HorizontalPodAutoscaler smart-building/telemetry" {
		t.Fatalf("objects: %s", got)
	}
	res, err := Check(objs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 1 || res.Images[0].Ref != manifests.TelemetryImage || res.Images[0].Container != "telemetry" {
		t.Errorf("images: %+v", res.Images)
	}
	if len(res.Generated) != 0 {
		t.Errorf("generated a LimitRange although the namespace has one: %+v", res.Notes)
	}
	d := objs[2].Object.(*appsv1.Deployment)
	c := d.Spec.Template.Spec.Containers[0]
	if *d.Spec.Replicas != 3 || c.Resources.Requests.Cpu().String() != "200m" || c.Resources.Requests.Memory().String() != "200Mi" ||
		c.Resources.Limits.Cpu().String() != "400m" || c.Resources.Limits.Memory().String() != "400Mi" || c.LivenessProbe.HTTPGet.Path != "/health" {
		t.Errorf("deployment does not match issue 3 §6: %+v", c)
	}
	h := objs[4].Object.(*autoscalingv2.HorizontalPodAutoscaler)
	if *h.Spec.MinReplicas != 2 || h.Spec.MaxReplicas != 6 || *h.Spec.Metrics[0].Resource.Target.AverageUtilization != 60 || *h.Spec.Behavior.ScaleDown.StabilizationWindowSeconds != 300 {
		t.Errorf("HPA does not match issue 3 §6: %+v", h.Spec)
	}
}

func TestStrictDecodeErrors(t *testing.T) {
	for name, tc := range map[string]struct{ doc, want string }{
		"unknown field": {`apiVersion: apps/v1
kind: Deployment
metadata: {name: a}
spec:
  selector: {}
  template:
    spec:
      containers:
        - name: c
          image: x:1
          imagePullPolicyy: Always
`, `unknown field "spec.template.spec.containers[0].imagePullPolicyy"`},
		"unknown kind":      {"apiVersion: v1\nkind: Pdo\nmetadata: {name: a}\n", `unknown kind "Pdo" in apiVersion "v1"`},
		"unknown group":     {"apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: a}\n", `unknown kind "Widget"`},
		"hpa v1":            {"apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: a}\n", `unknown kind "HorizontalPodAutoscaler" in apiVersion "autoscaling/v1"`},
		"not yaml":          {"a: [b\n", "invalid YAML"},
		"not an object":     {"- a\n- b\n", "not a Kubernetes object"},
		"no kind":           {"apiVersion: v1\nmetadata: {name: a}\n", "missing apiVersion or kind"},
		"no name":           {"apiVersion: v1\nkind: ConfigMap\n", "metadata.name is required"},
		"duplicate field":   {"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: '1'}\ndata: {y: '2'}\n", `key "data" already set`},
		"helm unknown":      {"apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: a}\nspec: {chart: x, valuesContnet: ''}\n", `unknown field "spec.valuesContnet"`},
		"cert-manager type": {"apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata: {name: a}\nspec: {selfSigned: {}, bogus: 1}\n", `unknown field "spec.bogus"`},
		"wrong type":        {"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {replicas: three}\n", "Deployment"},
	} {
		doc := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\n---\n" + tc.doc
		_, err := Decode("m.yaml", []byte(doc))
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Errorf("%s: error %v is not a DecodeError", name, err)
			continue
		}
		if de.File != "m.yaml" || de.Index != 1 || !strings.Contains(err.Error(), "m.yaml: document 1: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want m.yaml document 1 and %q", name, err, tc.want)
		}
	}
}

func TestDecodeReportsEveryBadDocument(t *testing.T) {
	doc := "apiVersion: v1\nkind: Nope\nmetadata: {name: a}\n---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\nbogus: 1\n"
	objs, err := Decode("m.yaml", []byte(doc))
	if err == nil || !strings.Contains(err.Error(), "document 0") || !strings.Contains(err.Error(), "document 2") {
		t.Fatalf("error %v does not name documents 0 and 2", err)
	}
	if len(objs) != 0 {
		t.Errorf("%d objects", len(objs))
	}
}

const badWorkloads = `apiVersion: v1
kind: Namespace
metadata: {name: plant}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: plant}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      initContainers:
        - name: migrate
          image: ghcr.io/acme/migrate:v1
          args: ["--helper-image=ghcr.io/acme/helper:v2"]
      containers:
        - name: web
          image: ghcr.io/acme/web:latest
          imagePullPolicy: Always
          resources:
            requests: {memory: 64Mi}
            limits: {cpu: 100m, memory: 64Mi}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: plant}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 3
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: ghost, namespace: plant}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ghost}
  maxReplicas: 3
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
  namespace: plant
  annotations: {edgeimg.dev/allow-no-limits: "true"}
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: report
              image: busybox
`

func TestPolicyListsAllViolations(t *testing.T) {
	objs, err := Decode("plant.yaml", []byte(badWorkloads))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Check(objs)
	var vs Violations
	if !errors.As(err, &vs) {
		t.Fatalf("error %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`plant.yaml: document 1: Deployment plant/web: container "migrate": missing requests.cpu, requests.memory, limits.cpu, limits.memory (opt out: annotation edgeimg.dev/allow-no-limits: "true")`,
		`plant.yaml: document 1: Deployment plant/web: container "web": missing requests.cpu (opt out`,
		`container "web": image reference "ghcr.io/acme/web:latest": tag "latest"`,
		`container "web": imagePullPolicy: Always`,
		`plant.yaml: document 2: HorizontalPodAutoscaler plant/web: container "web": scales on CPU but container "web" of Deployment plant/web has no CPU request (opt out: annotation edgeimg.dev/allow-hpa-without-requests`,
		`plant.yaml: document 3: HorizontalPodAutoscaler plant/ghost: scaleTargetRef Deployment plant/ghost is not in the manifests (opt out: annotation edgeimg.dev/allow-missing-scale-target`,
		`plant.yaml: document 4: CronJob plant/report: container "report": image reference "busybox"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("violations lack\n  %s\ngot:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "CronJob plant/report: container \"report\": missing") {
		t.Error("the allow-no-limits annotation was not honoured")
	}
	if len(vs) != 7 {
		t.Errorf("%d violations, want 7:\n%s", len(vs), msg)
	}
	// Images, init containers and arguments included.
	var refs []string
	for _, u := range res.Images {
		refs = append(refs, u.Ref)
	}
	if got := strings.Join(refs, " "); got != "busybox ghcr.io/acme/helper:v2 ghcr.io/acme/migrate:v1 ghcr.io/acme/web:latest" {
		t.Errorf("images: %s", got)
	}
	// The namespace without LimitRange gets one.
	if len(res.Generated) != 1 || res.Generated[0].Namespace() != "plant" || !strings.Contains(res.Notes[0], "namespace plant has no LimitRange") {
		t.Errorf("generated %+v notes %v", res.Generated, res.Notes)
	}
}

func TestImageDiscovery(t *testing.T) {
	doc := `apiVersion: v1
kind: Pod
metadata: {name: dbg, namespace: ops}
spec:
  containers:
    - name: main
      image: docker.io/library/nginx:1.27
      resources: {requests: {cpu: 10m, memory: 10Mi}, limits: {cpu: 10m, memory: 10Mi}}
  ephemeralContainers:
    - name: shell
      image: busybox:1.36.1
---
apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata: {name: cert-manager, namespace: kube-system}
spec:
  chart: cert-manager
  jobImage: rancher/klipper-helm:v0.9.3-build20241008
  valuesContent: |-
    image:
      repository: quay.io/jetstack/cert-manager-controller
      tag: v1.16.2
    webhook:
      image: {registry: quay.io, repository: jetstack/cert-manager-webhook, tag: v1.16.2}
    cainjector:
      image: quay.io/jetstack/cert-manager-cainjector:v1.16.2
    extraArgs:
      - --acme-http01-solver-image=quay.io/jetstack/cert-manager-acmesolver:v1.16.2
    startupapicheck:
      image: {repository: quay.io/jetstack/cert-manager-startupapicheck}
`
	objs, err := Decode("cm.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Check(objs)
	var vs Violations
	if !errors.As(err, &vs) || len(vs) != 1 || vs[0].Rule != AllowUnresolvedImages || !strings.Contains(vs[0].Message, "cert-manager-startupapicheck") {
		t.Fatalf("want one unresolved-image violation, got %v", err)
	}
	var got []string
	for _, u := range res.Images {
		got = append(got, u.Ref+" <- "+u.Container)
	}
	want := []string{
		"busybox:1.36.1 <- shell",
		"docker.io/library/nginx:1.27 <- main",
		"quay.io/jetstack/cert-manager-acmesolver:v1.16.2 <- valuesContent.extraArgs[0]",
		"quay.io/jetstack/cert-manager-cainjector:v1.16.2 <- valuesContent.cainjector.image",
		"quay.io/jetstack/cert-manager-controller:v1.16.2 <- valuesContent.image",
		"quay.io/jetstack/cert-manager-webhook:v1.16.2 <- valuesContent.webhook.image",
		"rancher/klipper-helm:v0.9.3-build20241008 <- spec.jobImage",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("images:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
