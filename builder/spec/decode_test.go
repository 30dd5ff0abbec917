package spec

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

const fullSpec = `# a complete spec
name: store-gateway
board: rpi4
version: "3.1"
base:
  image: https://downloads.example.com/raspios/2024-11-19-raspios-bookworm-arm64-lite.img.xz
  sha256: ` + sha + `
overlays: [overlays/common, overlays/store]
users:
  - name: ops
    uid: 1000
    groups: [sudo, adm]
    shell: /bin/bash
    sshAuthorizedKeys:
      - ` + keyEd25519 + `
      - ` + keyECDSA + `
    passwordHash: "` + hashSHA512 + `"
  - name: ci
hostname: edge
layout:
  bootSize: 256MiB
  systemSize: 2GiB
  dataMinSize: 1073741824
output:
  dir: out
  compress: xz
`

func TestDecodeFull(t *testing.T) {
	s, err := Decode(strings.NewReader(fullSpec), "edgeimg.yaml")
	if err != nil {
		t.Fatal(err)
	}
	uid := 1000
	want := &Spec{
		Name:    "store-gateway",
		Board:   "rpi4",
		Version: "3.1",
		Base: Base{
			Image:  "https://downloads.example.com/raspios/2024-11-19-raspios-bookworm-arm64-lite.img.xz",
			SHA256: sha,
		},
		Overlays: []string{"overlays/common", "overlays/store"},
		Users: []User{{
			Name:              "ops",
			UID:               &uid,
			Groups:            []string{"sudo", "adm"},
			Shell:             "/bin/bash",
			SSHAuthorizedKeys: []string{keyEd25519, keyECDSA},
			PasswordHash:      hashSHA512,
		}, {Name: "ci"}},
		Hostname: "edge",
		Layout:   Layout{BootSize: 256 * MiB, SystemSize: 2 * GiB, DataMinSize: GiB},
		Output:   Output{Dir: "out", Compress: "xz"},
		File:     "edgeimg.yaml",
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", s, want)
	}
	s.SetDefaults(testDefaults)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.Users[1].Shell != DefaultShell {
		t.Errorf("users[1].shell = %q after SetDefaults, want %q", s.Users[1].Shell, DefaultShell)
	}
}

func TestDecodeJSON(t *testing.T) {
	s, err := Decode(strings.NewReader(`{"name": "j", "layout": {"bootSize": "64MiB"}, "users": [{"name": "a", "uid": 1001}]}`), "e.json")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "j" || s.Layout.BootSize != 64*MiB || *s.Users[0].UID != 1001 {
		t.Fatalf("decoded %+v", s)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []string // one per error line, in order
	}{
		{"unknown field", "name: a\nboard: rpi4\nversion: \"1\"\nhostname: h\nusers: []\noutput: {dir: out}\noverlay: [x]\n",
			[]string{`edgeimg.yaml:7: field "overlay" not found in spec (did you mean "overlays"?)`}},
		{"unknown field no suggestion", "name: a\nzzzzzz: 1\n",
			[]string{`edgeimg.yaml:2: field "zzzzzz" not found in spec`}},
		{"unknown nested field", "name: a\nusers:\n  - name: ops\n    sshKeys: []\n",
			[]string{`edgeimg.yaml:4: field "sshKeys" not found in users[0] (did you mean "sshAuthorizedKeys"?)`}},
		{"unknown field case", "name: a\nlayout:\n  bootsize: 1GiB\n",
			[]string{`edgeimg.yaml:3: field "bootsize" not found in layout (did you mean "bootSize"?)`}},
		{"all problems at once", "name: a\nusers:\n  - name: x\n    shel: /bin/sh\n    uid: 0x10\nlayout: {bootSize: 2GB, systemSize: 1.5GiB}\n", []string{
			`edgeimg.yaml:4: field "shel" not found in users[0] (did you mean "shell"?)`,
			`edgeimg.yaml:5: users[0].uid: "0x10" is not a decimal whole number`,
			`edgeimg.yaml:6: layout.bootSize: "2GB" has an ambiguous or unknown unit "GB": use the binary units KiB, MiB, GiB or TiB (e.g. 2GiB)`,
			`edgeimg.yaml:6: layout.systemSize: "1.5GiB" is not a size`,
		}},
		{"bad size unit", "layout:\n  systemSize: 512M\n",
			[]string{`edgeimg.yaml:2: layout.systemSize: "512M" has an ambiguous or unknown unit "M"`}},
		{"zero size", "layout:\n  dataMinSize: 0\n",
			[]string{`edgeimg.yaml:2: layout.dataMinSize: "0" must be greater than zero`}},
		{"negative size", "layout:\n  dataMinSize: -5\n",
			[]string{`edgeimg.yaml:2: layout.dataMinSize: "-5" is not a size`}},
		{"size as list", "layout:\n  bootSize: [1]\n",
			[]string{`edgeimg.yaml:2: layout.bootSize: expected a size such as 256MiB, got a list`}},
		{"size as float", "layout:\n  bootSize: 1.5\n",
			[]string{`edgeimg.yaml:2: layout.bootSize: "1.5" is not a size`}},
		{"uid as string", "users:\n  - name: a\n    uid: \"1000\"\n",
			[]string{`edgeimg.yaml:3: users[0].uid: expected a whole number, got the string "1000"`}},
		{"uid too big", "users:\n  - {name: a, uid: 99999999999999999999}\n",
			[]string{`edgeimg.yaml:2: users[0].uid: expected a whole number, got the number 99999999999999999999`}},
		{"uid too big for int64", "users:\n  - {name: a, uid: 9999999999999999999}\n",
			[]string{`edgeimg.yaml:2: users[0].uid: "9999999999999999999" is not a decimal whole number in range`}},
		{"string given a mapping", "name: {a: b}\n",
			[]string{`edgeimg.yaml:1: name: expected a string, got a mapping`}},
		{"list given a string", "overlays: overlays/common\n",
			[]string{`edgeimg.yaml:1: overlays: expected a list, got the string "overlays/common"`}},
		{"struct given a string", "base: foo.img\n",
			[]string{`edgeimg.yaml:1: base: expected a mapping of fields, got the string "foo.img"`}},
		{"top level list", "- name: a\n",
			[]string{`edgeimg.yaml:1: spec: expected a mapping of fields, got a list`}},
		{"top level scalar", "hello\n",
			[]string{`edgeimg.yaml:1: spec: expected a mapping of fields, got the string "hello"`}},
		{"duplicate key", "name: a\nboard: rpi4\nname: b\n",
			[]string{`edgeimg.yaml:3: field "name" is set twice in spec (first at line 1)`}},
		{"two documents", "name: a\n---\nname: b\n",
			[]string{`edgeimg.yaml:2: a second YAML document: a spec is a single document`}},
		{"two documents after comments", "name: a\n# more\n---\n# b\nname: b\n",
			[]string{`edgeimg.yaml:3: a second YAML document`}},
		{"empty file", "", []string{`edgeimg.yaml: the spec is empty`}},
		{"only comments", "# nothing here\n\n", []string{`edgeimg.yaml: the spec is empty`}},
		{"null document", "~\n", []string{`edgeimg.yaml:1: the spec is empty`}},
		{"syntax error", "name: a\nusers: [\n", []string{`edgeimg.yaml:2: did not find expected node content`}},
		{"tab indentation", "name: a\nbase:\n\timage: x\n", []string{`edgeimg.yaml:3: found character that cannot start any token`}},
		{"merge of wrong fields", "base: &b {image: x.img}\nusers: [{<<: *b, name: x}]\n",
			[]string{`edgeimg.yaml:1: field "image" not found in users[0]`}},
		{"too large", "name: a\n" + strings.Repeat("# padding padding padding\n", 50000),
			[]string{`edgeimg.yaml: larger than 1048576 bytes`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Decode(strings.NewReader(tc.in), "edgeimg.yaml")
			if err == nil {
				t.Fatalf("decoded %+v, want an error", s)
			}
			if s != nil {
				t.Errorf("Decode returned a spec with the error %v", err)
			}
			wantErrs(t, err, tc.want...)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Errorf("error %v holds no *DecodeError", err)
			}
		})
	}
}

func TestDecodeTooManyErrors(t *testing.T) {
	in := "name: a\n" + strings.Repeat("nope: 1\n", 100)
	_, err := Decode(strings.NewReader(in), "e.yaml")
	lines := errLines(err)
	if len(lines) != maxDecodeErrors+1 || lines[0] != `e.yaml:2: field "nope" not found in spec` || lines[maxDecodeErrors] != "e.yaml:52: too many errors" {
		t.Fatalf("got %d lines, first %q, last %q", len(lines), lines[0], lines[len(lines)-1])
	}
}

func TestDecodeMergeAndAliases(t *testing.T) {
	in := `
name: a
x-user: &u {groups: [sudo], shell: /bin/sh}
users:
  - {<<: *u, name: one}
  - {<<: *u, name: two, shell: /bin/bash}
`
	// An unknown top-level key is still refused, even one that only holds an anchor.
	if _, err := Decode(strings.NewReader(in), "e.yaml"); err == nil || !strings.Contains(err.Error(), `e.yaml:3: field "x-user" not found in spec`) {
		t.Fatalf("err = %v", err)
	}
	in = `
name: a
users:
  - &u {name: one, groups: [sudo], shell: /bin/sh}
  - {<<: *u, name: two, shell: /bin/bash}
`
	s, err := Decode(strings.NewReader(in), "e.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Users[1]; got.Name != "two" || got.Shell != "/bin/bash" || !reflect.DeepEqual(got.Groups, []string{"sudo"}) {
		t.Fatalf("users[1] = %+v", got)
	}
}

func TestDecodeAliasBomb(t *testing.T) {
	// Well-typed merge keys that expand exponentially: the walk visits each node once, and
	// yaml.v3 refuses the expansion instead of running out of memory.
	var b strings.Builder
	b.WriteString("name: a\nusers:\n  - &a0 {name: x}\n")
	for i := 1; i < 30; i++ {
		b.WriteString("  - &a" + strconv.Itoa(i) + " {<<: [")
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*a" + strconv.Itoa(i-1))
		}
		b.WriteString("]}\n")
	}
	_, err := Decode(strings.NewReader(b.String()), "bomb.yaml")
	if err == nil || err.Error() != "bomb.yaml: document contains excessive aliasing" {
		t.Fatalf("err = %v, want excessive aliasing", err)
	}
}

func TestLoadResolvesPaths(t *testing.T) {
	tmp := t.TempDir()
	sub := filepath.Join(tmp, "proj")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	abs := filepath.Join(tmp, "elsewhere")
	spec := `name: a
board: rpi4
base:
  image: images/base.img.zst
overlays: [overlays/common, ` + abs + `, ../shared/o]
output:
  dir: build/out
`
	if err := os.WriteFile(filepath.Join(sub, "edgeimg.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(tmp)
	s, err := Load("proj/edgeimg.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Dir != sub || s.File != "proj/edgeimg.yaml" {
		t.Errorf("Dir, File = %q, %q; want %q, %q", s.Dir, s.File, sub, "proj/edgeimg.yaml")
	}
	if want := filepath.Join(sub, "images/base.img.zst"); s.Base.Image != want {
		t.Errorf("base.image = %q, want %q", s.Base.Image, want)
	}
	wantOverlays := []string{filepath.Join(sub, "overlays/common"), abs, filepath.Join(tmp, "shared/o")}
	if !reflect.DeepEqual(s.Overlays, wantOverlays) {
		t.Errorf("overlays = %q, want %q", s.Overlays, wantOverlays)
	}
	if want := filepath.Join(sub, "build/out"); s.Output.Dir != want {
		t.Errorf("output.dir = %q, want %q", s.Output.Dir, want)
	}

	// A URL stays as it is, and the default output directory is relative to the spec too.
	spec = "name: a\nbase: {image: \"https://example.com/x.img.xz\", sha256: " + sha + "}\n"
	if err := os.WriteFile(filepath.Join(sub, "edgeimg.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = Load(filepath.Join(sub, "edgeimg.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Base.Image != "https://example.com/x.img.xz" {
		t.Errorf("base.image = %q, want the URL unchanged", s.Base.Image)
	}
	s.SetDefaults(testDefaults)
	if want := filepath.Join(sub, "out"); s.Output.Dir != want {
		t.Errorf("default output.dir = %q, want %q", s.Output.Dir, want)
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "edgeimg.yaml")
	if err := os.WriteFile(p, []byte("name: a\n\nusers:\n  - nam: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if want := p + `:4: field "nam" not found in users[0] (did you mean "name"?)`; err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("err = %v, want a not-exist error naming the file", err)
	}
}

func TestSetDefaults(t *testing.T) {
	s := &Spec{Name: "a", Users: []User{{Name: "x"}, {Name: "y", Shell: "/bin/sh"}}}
	s.SetDefaults(testDefaults)
	want := &Spec{
		Name:    "a",
		Version: "0",
		Users:   []User{{Name: "x", Shell: "/bin/bash"}, {Name: "y", Shell: "/bin/sh"}},
		Layout:  Layout{BootSize: 256 * MiB, SystemSize: 2 * GiB, DataMinSize: GiB},
		Output:  Output{Dir: "out", Compress: "zstd"},
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got  %+v\nwant %+v", s, want)
	}
	// Idempotent, and never overrides what the spec says.
	s.SetDefaults(Defaults{BootSize: 1, SystemSize: 1, DataMinSize: 1, Compress: "xz", OutputDir: "o", Version: "9"})
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("second SetDefaults changed the spec: %+v", s)
	}
	// Defaults given by the caller win over the package's.
	s = &Spec{}
	s.SetDefaults(Defaults{Compress: "none", OutputDir: "dist", Version: "7"})
	if s.Output.Compress != "none" || s.Output.Dir != "dist" || s.Version != "7" {
		t.Fatalf("got %+v", s)
	}
}
