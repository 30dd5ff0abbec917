package plan

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/manifests"
	"github.com/edgeimg/edgeimg/manifests/check"
)

func example(t *testing.T, doc []byte) []check.Object {
	t.Helper()
	objs, err := check.Decode("manifests/telemetry.yaml", doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := check.Check(objs); err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestExampleFits4GiBAtMaxReplicas(t *testing.T) {
	board, err := RPi4(4)
	if err != nil {
		t.Fatal(err)
	}
	p := Make(board, example(t, manifests.Telemetry), Options{CertManager: true})
	if len(p.Workloads) != 1 {
		t.Fatalf("workloads %+v", p.Workloads)
	}
	w := p.Workloads[0]
	if w.MinReplicas != 2 || w.MaxReplicas != 6 || w.PodRequestMemory != 200*MiB || w.PodLimitMemory != 400*MiB || w.PodRequestCPU != 200 || w.HPA != "HorizontalPodAutoscaler smart-building/telemetry" {
		t.Fatalf("workload %+v", w)
	}
	if !p.Fits || Check(p, false) != nil {
		t.Fatalf("example does not fit 4 GiB: %v", p.Overflow)
	}
	fixed := OS.Memory + K3sServer.Memory + K3sAddons.Memory + Agent.Memory + CertManager.Memory
	if p.MemoryRequestsMax != fixed+6*200*MiB || p.MemoryRequestsMin != fixed+2*200*MiB {
		t.Errorf("totals %d..%d", p.MemoryRequestsMin, p.MemoryRequestsMax)
	}
	var tab, js bytes.Buffer
	if err := p.WriteTable(&tab); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tab.String(), "Deployment smart-building/telemetry (HorizontalPodAutoscaler smart-building/telemetry)  2..6") || !strings.Contains(tab.String(), "FITS") {
		t.Errorf("table:\n%s", tab.String())
	}
	if err := p.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Plan
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.MemoryRequestsMax != p.MemoryRequestsMax {
		t.Errorf("json round trip: %v", err)
	}
}

func TestOverflowNamesHPA(t *testing.T) {
	board, _ := RPi4(2)
	big := bytes.Replace(manifests.Telemetry, []byte("maxReplicas: 6"), []byte("maxReplicas: 12"), 1)
	p := Make(board, example(t, big), Options{CertManager: true})
	err := Check(p, false)
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("12 replicas fit 2 GiB? %v", err)
	}
	fixed := OS.Memory + K3sServer.Memory + K3sAddons.Memory + Agent.Memory + CertManager.Memory
	over := fixed + 12*200*MiB - 2<<30
	msg := err.Error()
	for _, want := range []string{
		"rpi4-2GiB", human(over) + " more than",
		"HorizontalPodAutoscaler smart-building/telemetry scaling Deployment smart-building/telemetry from 2 to 12 replicas adds 1.95 GiB",
		"plan.allowOvercommit",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if Check(p, true) != nil {
		t.Error("allowOvercommit did not allow it")
	}
	if _, err := RPi4(3); err == nil {
		t.Error("3 GiB Pi 4 accepted")
	}
}
