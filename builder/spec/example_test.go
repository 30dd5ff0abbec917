package spec

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

const exampleFile = "../../edgeimg.example.yaml"

// TestExampleFile checks the documented example loads, validates and shows every field.
func TestExampleFile(t *testing.T) {
	s, err := Load(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if s.Dir != root || s.Overlays[0] != filepath.Join(root, "overlays/common") || s.Output.Dir != filepath.Join(root, "out") {
		t.Errorf("paths not resolved against %s: %+v", root, s)
	}
	s.SetDefaults(testDefaults)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	var collect func(n *yaml.Node, path string)
	collect = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				collect(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := joinPath(path, n.Content[i].Value)
				present[p] = true
				// A comment above the first field of a mapping may belong to the mapping.
				if n.Content[i].HeadComment == "" && (i > 0 || n.HeadComment == "") {
					t.Errorf("%s: field %s has no comment above it", exampleFile, p)
				}
				collect(n.Content[i+1], p)
			}
		}
	}
	collect(&doc, "")
	for _, p := range fieldPaths(reflect.TypeFor[Spec](), "") {
		if !present[p] {
			t.Errorf("%s does not show the field %s", exampleFile, p)
		}
	}
}

// fieldPaths lists the YAML paths of every field of t, lists entered without an index.
func fieldPaths(t reflect.Type, path string) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	fields, names := yamlFields(t)
	for _, n := range names {
		p := joinPath(path, n)
		out = append(out, p)
		out = append(out, fieldPaths(fields[n], p)...)
	}
	return out
}
