package spec

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFleet(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "edgeimg.yaml")
	if err := os.WriteFile(p, []byte("name: gw\nboard: rpi4\nfleet:\n  url: https://fleet.example.com:8443\n  ca: pki/fleet-ca.pem\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if s.Fleet == nil || s.Fleet.CA != filepath.Join(dir, "pki/fleet-ca.pem") {
		t.Fatalf("fleet.ca not resolved against %s: %+v", dir, s.Fleet)
	}
	if s.Fleet.Heartbeat != "" {
		t.Errorf("heartbeat %q before SetDefaults", s.Fleet.Heartbeat)
	}
	s.SetDefaults(testDefaults)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.Fleet.Heartbeat != DefaultHeartbeat || s.Fleet.Heartbeat.Seconds() != 30 {
		t.Errorf("default heartbeat %q (%d s)", s.Fleet.Heartbeat, s.Fleet.Heartbeat.Seconds())
	}

	// Without fleet, the spec has none and SetDefaults does not make one.
	s, err = Decode(strings.NewReader("name: gw\nboard: rpi4\n"), "e.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.SetDefaults(testDefaults)
	if s.Fleet != nil {
		t.Errorf("SetDefaults made a fleet: %+v", s.Fleet)
	}
}

func TestFleetValidate(t *testing.T) {
	for _, tc := range []struct {
		fleet string
		want  []string // field errors, in order
	}{
		{"{url: https://fleet.example.com, ca: ca.pem, heartbeat: 1m}", nil},
		{"{url: 'https://10.0.0.1:8443/edge/', ca: /etc/ca.pem, heartbeat: 5s}", nil},
		{"{url: 'https://[::1]:8443', ca: ca.pem, heartbeat: 1h}", nil},
		{"{}", []string{"fleet.url: must be set", "fleet.ca: must be set"}},
		{"{url: http://fleet.example.com, ca: ca.pem}", []string{`fleet.url: "http://fleet.example.com" must use https`}},
		{"{url: fleet.example.com, ca: ca.pem}", []string{`fleet.url: "fleet.example.com" must use https`}},
		{"{url: 'https://', ca: ca.pem}", []string{`fleet.url: "https://" has no host`}},
		{"{url: 'https://admin:pw@fleet', ca: ca.pem}", []string{`fleet.url: "https://admin:pw@fleet" must not hold user information`}},
		{"{url: 'https://fleet/?x=1', ca: ca.pem}", []string{`fleet.url: "https://fleet/?x=1" must not have a query or fragment`}},
		{"{url: 'https://fleet/#x', ca: ca.pem}", []string{`fleet.url: "https://fleet/#x" must not have a query or fragment`}},
		{"{url: 'https://fleet:99999', ca: ca.pem}", []string{`fleet.url: "https://fleet:99999" has the invalid port "99999"`}},
		{"{url: 'https://fle et', ca: ca.pem}", []string{`fleet.url: "https://fle et" contains a space`}},
		{"{url: 'https://fleet', ca: \"a\\x01\"}", []string{`fleet.ca: "a\x01" contains a control character`}},
		{"{url: 'https://fleet', ca: ca.pem, heartbeat: 30}", []string{`fleet.heartbeat: "30" is not a duration`}},
		{"{url: 'https://fleet', ca: ca.pem, heartbeat: soon}", []string{`fleet.heartbeat: "soon" is not a duration`}},
		{"{url: 'https://fleet', ca: ca.pem, heartbeat: 1s}", []string{"fleet.heartbeat: 1s is out of range: 5s to 1h0m0s"}},
		{"{url: 'https://fleet', ca: ca.pem, heartbeat: 2h}", []string{"fleet.heartbeat: 2h is out of range"}},
		{"{url: 'https://fleet', ca: ca.pem, heartbeat: 7500ms}", []string{"fleet.heartbeat: 7500ms is not a whole number of seconds"}},
	} {
		t.Run(tc.fleet, func(t *testing.T) {
			s, err := Decode(strings.NewReader("name: gw\nboard: rpi4\nfleet: "+tc.fleet+"\n"), "e.yaml")
			if err != nil {
				t.Fatal(err)
			}
			s.SetDefaults(testDefaults)
			err = s.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("valid")
			}
			for _, fe := range fieldErrors(t, err) {
				if !strings.HasPrefix(fe.Field, "fleet.") {
					t.Errorf("error on %s", fe.Field)
				}
			}
			wantErrs(t, err, tc.want...)
		})
	}
}

func TestFleetDecodeErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"fleet: https://fleet\n", "e.yaml:2: fleet: expected a mapping of fields"},
		{"fleet:\n  url: https://fleet\n  cert: ca.pem\n", `e.yaml:4: field "cert" not found in fleet`},
		{"fleet:\n  url: https://fleet\n  heartbeat: [30s]\n", "e.yaml:4: fleet.heartbeat: expected a string, got a list"},
	} {
		_, err := Decode(strings.NewReader("name: gw\n"+tc.in), "e.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.in, err, tc.want)
		}
	}
}

// TestFleetDocumented holds fleet.go to TestFieldsDocumented's rules.
func TestFleetDocumented(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "fleet.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ast.Inspect(f, func(node ast.Node) bool {
		ts, ok := node.(*ast.TypeSpec)
		if !ok {
			return true
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			return true
		}
		for _, fld := range st.Fields.List {
			n++
			name := fld.Names[0].Name
			if fld.Doc == nil || !strings.HasPrefix(fld.Doc.Text(), name+" ") {
				t.Errorf("%s.%s has no doc comment starting with its name", ts.Name.Name, name)
			}
			if fld.Tag == nil || !strings.Contains(fld.Tag.Value, `jsonschema_description:"`) {
				t.Errorf("%s.%s has no jsonschema_description", ts.Name.Name, name)
			}
		}
		return true
	})
	if n != 3 {
		t.Errorf("found %d fields in fleet.go, want 3", n)
	}
}
