package spec

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/invopop/jsonschema"
	"gopkg.in/yaml.v3"
)

// Size is a number of bytes. In a spec it is written as a whole number with a binary unit,
// KiB, MiB, GiB or TiB ("256MiB", "2GiB"), or as a plain number of bytes (1073741824).
//
// Decimal or bare units (MB, GB, M, G, …) are refused rather than guessed: whether "512M"
// means 512×10⁶ or 512×2²⁰ bytes is exactly the kind of ambiguity a partition size must not
// have. A Size in a spec must be greater than zero; zero means "not set".
type Size int64

// Binary size units.
const (
	KiB Size = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

var sizeUnits = []struct {
	name string
	size Size
}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}}

// sizePattern is the written form of a Size; the JSON Schema uses it too.
const sizePattern = `^[0-9]+ ?(B|KiB|MiB|GiB|TiB)?$`

var sizeNumUnit = regexp.MustCompile(`^([0-9]+) ?([A-Za-z]*)$`)

// ParseSize parses the written form of a Size: digits, then optionally one space and a unit
// B, KiB, MiB, GiB or TiB. It refuses zero, fractions, signs and units other than those.
func ParseSize(s string) (Size, error) {
	m := sizeNumUnit.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size: write a whole number of bytes or of KiB, MiB, GiB or TiB (e.g. 256MiB)", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is too large", s)
	}
	unit := Size(1)
	switch m[2] {
	case "", "B":
	case "KiB":
		unit = KiB
	case "MiB":
		unit = MiB
	case "GiB":
		unit = GiB
	case "TiB":
		unit = TiB
	default:
		return 0, fmt.Errorf("%q has an ambiguous or unknown unit %q: use the binary units KiB, MiB, GiB or TiB (e.g. %s%s) or a number of bytes", s, m[2], m[1], suggestUnit(m[2]))
	}
	if n == 0 {
		return 0, fmt.Errorf("%q must be greater than zero", s)
	}
	if n > math.MaxInt64/int64(unit) {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(n) * unit, nil
}

// suggestUnit maps a decimal or bare unit to the binary unit a user most likely meant.
func suggestUnit(u string) string {
	switch strings.ToUpper(u)[:1] {
	case "K":
		return "KiB"
	case "G":
		return "GiB"
	case "T":
		return "TiB"
	}
	return "MiB"
}

// String returns the canonical written form: the largest binary unit that divides the size
// exactly ("256MiB", "1536MiB", "2GiB"), or the plain number of bytes.
func (z Size) String() string {
	if z > 0 {
		for _, u := range sizeUnits {
			if z%u.size == 0 {
				return strconv.FormatInt(int64(z/u.size), 10) + u.name
			}
		}
	}
	return strconv.FormatInt(int64(z), 10)
}

// MarshalYAML writes the canonical form: a string with a unit, or an integer of bytes.
func (z Size) MarshalYAML() (any, error) {
	if z > 0 && z%KiB == 0 {
		return z.String(), nil
	}
	return int64(z), nil
}

// UnmarshalYAML reads a string with a unit or a decimal integer of bytes.
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := sizeFromNode(n)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*z = v
	return nil
}

// sizeFromNode decodes a (non-null) YAML node as a Size.
func sizeFromNode(n *yaml.Node) (Size, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, fmt.Errorf("expected a size such as 256MiB, got a %s", kindName(n.Kind))
	}
	switch n.ShortTag() {
	case "!!str", "!!int":
		return ParseSize(n.Value)
	}
	return 0, fmt.Errorf("%q is not a size: write a whole number of bytes or of KiB, MiB, GiB or TiB (e.g. 256MiB)", n.Value)
}

// MarshalJSON writes the canonical form: a string with a unit, or a number of bytes.
func (z Size) MarshalJSON() ([]byte, error) {
	v, _ := z.MarshalYAML()
	return json.Marshal(v)
}

// UnmarshalJSON reads a string with a unit or a whole number of bytes.
func (z *Size) UnmarshalJSON(b []byte) error {
	var s string
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	} else {
		s = string(b)
	}
	v, err := ParseSize(s)
	if err != nil {
		return err
	}
	*z = v
	return nil
}

// JSONSchema describes a Size: a string with a binary unit, or a positive integer of bytes.
func (Size) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{
		Description: "A size: a whole number with a binary unit (KiB, MiB, GiB, TiB), e.g. 256MiB, or a number of bytes.",
		OneOf: []*jsonschema.Schema{
			{Type: "string", Pattern: sizePattern},
			{Type: "integer", Minimum: json.Number("1")},
		},
	}
}
