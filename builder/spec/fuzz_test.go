package spec

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzDecode checks that Decode never panics on any input, and that a spec which decodes
// and validates comes back unchanged from both its YAML and its JSON encodings.
// Seeds are in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(fullSpec))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Decode(bytes.NewReader(data), "fuzz.yaml")
		if err != nil {
			if s != nil {
				t.Fatalf("Decode returned a spec and the error %v", err)
			}
			return
		}
		s.SetDefaults(testDefaults)
		if s.Validate() != nil {
			return
		}
		y, err := yaml.Marshal(s)
		if err != nil {
			t.Fatalf("marshalling a valid spec to YAML: %v", err)
		}
		j, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshalling a valid spec to JSON: %v", err)
		}
		for _, enc := range [][]byte{y, j} {
			s2, err := Decode(bytes.NewReader(enc), "fuzz.yaml")
			if err != nil {
				t.Fatalf("decoding the re-encoded spec:\n%s\n%v", enc, err)
			}
			s2.SetDefaults(testDefaults)
			if err := s2.Validate(); err != nil {
				t.Fatalf("the re-encoded spec does not validate:\n%s\n%v", enc, err)
			}
			if !reflect.DeepEqual(s, s2) {
				t.Fatalf("round trip changed the spec:\n%+v\n%+v\nvia\n%s", s, s2, enc)
			}
		}
	})
}
