package spec

import (
	"encoding/json"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		err  string
	}{
		{"1", 1, ""},
		{"512", 512, ""},
		{"512B", 512, ""},
		{"4KiB", 4096, ""},
		{"256MiB", 256 << 20, ""},
		{"256 MiB", 256 << 20, ""},
		{"2GiB", 2 << 30, ""},
		{"1TiB", 1 << 40, ""},
		{"8388607TiB", 8388607 << 40, ""},
		{"8388608TiB", 0, "is too large"},
		{"9223372036854775807", 1<<63 - 1, ""},
		{"9223372036854775808", 0, "is too large"},
		{"0", 0, "must be greater than zero"},
		{"0MiB", 0, "must be greater than zero"},
		{"512M", 0, `ambiguous or unknown unit "M": use the binary units KiB, MiB, GiB or TiB (e.g. 512MiB)`},
		{"512MB", 0, `(e.g. 512MiB)`},
		{"2GB", 0, `(e.g. 2GiB)`},
		{"1k", 0, `(e.g. 1KiB)`},
		{"1tb", 0, `(e.g. 1TiB)`},
		{"256mib", 0, `unknown unit "mib"`},
		{"1.5GiB", 0, "is not a size"},
		{"-1", 0, "is not a size"},
		{"+1", 0, "is not a size"},
		{" 1", 0, "is not a size"},
		{"1  MiB", 0, "is not a size"},
		{"MiB", 0, "is not a size"},
		{"", 0, "is not a size"},
		{"0x10", 0, "is not a size"},
	} {
		got, err := ParseSize(tc.in)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseSize(%q) = %d, %v; want an error containing %q", tc.in, got, err, tc.err)
		}
	}
}

func TestSizeString(t *testing.T) {
	for z, want := range map[Size]string{
		1: "1", 1000: "1000", KiB: "1KiB", 1536 * MiB: "1536MiB", 2 * GiB: "2GiB", 3 * TiB: "3TiB",
		MiB + KiB: "1025KiB", 0: "0", -5: "-5",
	} {
		if got := z.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(z), got, want)
		}
		if z > 0 {
			back, err := ParseSize(want)
			if err != nil || back != z {
				t.Errorf("ParseSize(%q) = %d, %v; want %d", want, back, err, int64(z))
			}
		}
	}
}

func TestSizeYAMLAndJSON(t *testing.T) {
	type doc struct {
		A Size `yaml:"a" json:"a"`
		B Size `yaml:"b" json:"b"`
	}
	in := doc{A: 256 * MiB, B: 1000}
	y, err := yaml.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(y) != "a: 256MiB\nb: 1000\n" {
		t.Errorf("yaml = %q", y)
	}
	var out doc
	if err := yaml.Unmarshal(y, &out); err != nil || out != in {
		t.Errorf("yaml round trip = %+v, %v", out, err)
	}
	j, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(j) != `{"a":"256MiB","b":1000}` {
		t.Errorf("json = %s", j)
	}
	out = doc{}
	if err := json.Unmarshal(j, &out); err != nil || out != in {
		t.Errorf("json round trip = %+v, %v", out, err)
	}
	if err := json.Unmarshal([]byte(`{"a":"2GB"}`), &out); err == nil {
		t.Error("json accepted 2GB")
	}
	if err := json.Unmarshal([]byte(`{"a":1.5}`), &out); err == nil {
		t.Error("json accepted 1.5")
	}
	// yaml.v3 reports an UnmarshalYAML error with its line.
	err = yaml.Unmarshal([]byte("a: 1MiB\nb: 3 GB\n"), &out)
	if err == nil || !strings.Contains(err.Error(), `line 2: "3 GB" has an ambiguous or unknown unit`) {
		t.Errorf("err = %v", err)
	}
}
