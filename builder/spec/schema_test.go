package spec

import (
	"bytes"
	"encoding/json"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/schema.golden.json")

func TestSchemaGolden(t *testing.T) {
	got, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, again) {
		t.Fatal("Schema is not deterministic")
	}
	golden := filepath.Join("testdata", "schema.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Schema differs from %s; run go test -run TestSchemaGolden -update and review the diff:\n%s", golden, got)
	}
}

// TestSchemaShape checks every object forbids unknown properties and every property is
// described.
func TestSchemaShape(t *testing.T) {
	b, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if err := json.Unmarshal(b, &root); err != nil {
		t.Fatal(err)
	}
	defs := root["$defs"].(map[string]any)
	for _, name := range []string{"Spec", "Base", "User", "Layout", "Output", "Size"} {
		if defs[name] == nil {
			t.Errorf("no $defs/%s", name)
		}
	}
	objects := 0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			// Maps (k3s.config, registries.mirrors) are objects without properties.
			if v["type"] == "object" && v["properties"] != nil {
				objects++
				if v["additionalProperties"] != false {
					t.Errorf("%s: additionalProperties is %v, want false", path, v["additionalProperties"])
				}
				props, _ := v["properties"].(map[string]any)
				for name, p := range props {
					if d, _ := p.(map[string]any)["description"].(string); d == "" {
						t.Errorf("%s.%s has no description", path, name)
					}
				}
			}
			for k, c := range v {
				walk(path+"/"+k, c)
			}
		case []any:
			for i, c := range v {
				walk(path+"/"+strconv.Itoa(i), c)
			}
		}
	}
	walk("#", root)
	// Every struct of the spec is an object schema in $defs (the walk must have seen them all).
	wantObjects := 0
	for _, d := range defs {
		if d.(map[string]any)["type"] == "object" {
			wantObjects++
		}
	}
	if objects != wantObjects || objects < 6 {
		t.Errorf("found %d object schemas, want %d (at least 6)", objects, wantObjects)
	}
	spec := defs["Spec"].(map[string]any)
	if req := spec["required"].([]any); len(req) != 1 || req[0] != "name" {
		t.Errorf("Spec requires %v, want [name]", req)
	}
}

// TestFieldsDocumented checks that every field of the spec types has a doc comment, a
// schema description, and the same name in YAML and JSON.
func TestFieldsDocumented(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "spec.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok {
			return true
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			return true
		}
		seen[ts.Name.Name] = true
		for _, fld := range st.Fields.List {
			name := fld.Names[0].Name
			if fld.Doc == nil || !strings.HasPrefix(fld.Doc.Text(), name+" ") {
				t.Errorf("%s.%s has no doc comment starting with its name", ts.Name.Name, name)
			}
			if ts.Name.Name == "Defaults" || fld.Tag == nil {
				continue
			}
			tag, _ := strconv.Unquote(fld.Tag.Value)
			st := reflect.StructTag(tag)
			y, _, _ := strings.Cut(st.Get("yaml"), ",")
			j, _, _ := strings.Cut(st.Get("json"), ",")
			if y != j {
				t.Errorf("%s.%s: yaml name %q, json name %q", ts.Name.Name, name, y, j)
			}
			if y != "-" && st.Get("jsonschema_description") == "" {
				t.Errorf("%s.%s has no jsonschema_description", ts.Name.Name, name)
			}
		}
		return true
	})
	for _, n := range []string{"Spec", "Base", "User", "Layout", "Output"} {
		if !seen[n] {
			t.Errorf("spec.go declares no struct %s", n)
		}
	}
}
