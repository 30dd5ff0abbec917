package check

import (
	"testing"

	"github.com/edgeimg/edgeimg/manifests"
)

func FuzzDecode(f *testing.F) {
	f.Add(manifests.Telemetry)
	f.Add([]byte(badWorkloads))
	f.Add([]byte("apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: a}\nspec: {valuesContent: 'image: {repository: x, tag: 1}'}\n"))
	f.Add([]byte("---\n---\n- a\n"))
	f.Add([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {a: &x b, c: *x}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode("fuzz.yaml", data)
		if err == nil {
			for _, o := range objs {
				if o.Meta() == nil || o.Meta().GetName() == "" {
					t.Fatalf("decoded object without a name: %v", o.GVK)
				}
			}
		}
		_, _ = Check(objs)
	})
}
