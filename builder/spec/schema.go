package spec

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/invopop/jsonschema"
)

// Schema returns the JSON Schema of edgeimg.yaml, generated from the Spec type: indented,
// deterministic, additionalProperties false for every object.
func Schema() ([]byte, error) {
	r := &jsonschema.Reflector{
		Anonymous:                  true,
		RequiredFromJSONSchemaTags: true,
	}
	s := r.Reflect(&Spec{})
	s.Title = "edgeimg.yaml"
	out, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the spec's JSON Schema: %w", err)
	}
	return append(out, '\n'), nil
}

func ptr[T any](v T) *T { return &v }

func strings2any(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// prop returns the schema of property name; it panics if there is none (a programming error
// caught by the schema test).
func prop(s *jsonschema.Schema, name string) *jsonschema.Schema {
	p, ok := s.Properties.Get(name)
	if !ok {
		panic("spec: no property " + name)
	}
	return p
}

// JSONSchemaExtend adds the constraints Validate checks to the schema of Spec.
func (Spec) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "edgeimg.yaml: the declarative description of an edge device image."
	s.Required = []string{"name"}
	name := prop(s, "name")
	name.Pattern, name.MaxLength = namePattern, ptr(uint64(63))
	prop(s, "board").Enum = strings2any(slices.Sorted(slices.Values(KnownBoards)))
	v := prop(s, "version")
	v.Pattern, v.MaxLength = versionPattern, ptr(uint64(64))
	prop(s, "hostname").Pattern = hostnamePattern
	prop(s, "overlays").Items.MinLength = ptr(uint64(1))
}

// JSONSchemaExtend adds the constraints Validate checks to the schema of Base.
func (Base) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "The operating system disk image a build starts from."
	prop(s, "image").Pattern = imagePattern
	prop(s, "sha256").Pattern = sha256Pattern
}

// JSONSchemaExtend adds the constraints Validate checks to the schema of User.
func (User) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "A login user of the image."
	s.Required = []string{"name"}
	prop(s, "name").Pattern = userPattern
	uid := prop(s, "uid")
	uid.Minimum, uid.Maximum = json.Number(fmt.Sprint(MinUID)), json.Number(fmt.Sprint(MaxUID))
	g := prop(s, "groups")
	g.Items.Pattern, g.UniqueItems = userPattern, true
	prop(s, "shell").Pattern = `^/`
	prop(s, "sshAuthorizedKeys").Items.Pattern = keyPattern
	prop(s, "passwordHash").Pattern = cryptPattern
}

// JSONSchemaExtend describes Layout.
func (Layout) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "Partition sizes, each a whole number of MiB."
}

// JSONSchemaExtend adds the constraints Validate checks to the schema of Output.
func (Output) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "Where and how the image files are written."
	prop(s, "compress").Enum = strings2any(Compressions)
}
