package sbom

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

const status = `Package: bash
Status: install ok installed
Priority: required
Architecture: arm64
Maintainer: Matthias Klose <doko@debian.org>
Version: 5.2.15-2+b7
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.
 .
 More text.
Homepage: http://tiswww.case.edu/php/chet/bash/bashtop.html

Package: libc6
Status: install ok installed
Architecture: arm64
Source: glibc (2.36-9+rpt2+deb12u9)
Version: 2.36-9+rpt2+deb12u9
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>

Package: removed-thing
Status: deinstall ok config-files
Architecture: arm64
Version: 1.0

Package: aaa-first
Status: install ok installed
Architecture: all
Version: 1:2.0~rc1
`

func TestParseDpkgStatus(t *testing.T) {
	pkgs, err := ParseDpkgStatus(strings.NewReader(status))
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 3 || pkgs[0].Name != "aaa-first" || pkgs[1].Name != "bash" || pkgs[2].Name != "libc6" {
		t.Fatalf("packages: %+v", pkgs)
	}
	if pkgs[2].Source != "glibc" || pkgs[2].Version != "2.36-9+rpt2+deb12u9" {
		t.Errorf("libc6: %+v", pkgs[2])
	}
	for _, bad := range []struct{ in, want string }{
		{"Package bash\n", "line 1"},
		{" continuation\n", "line 1: continuation"},
		{"Status: install ok installed\nVersion: 1\n\n", "no Package field"},
	} {
		if _, err := ParseDpkgStatus(strings.NewReader(bad.in)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: error %v, want %q", bad.in, err, bad.want)
		}
	}
}

func TestDocument(t *testing.T) {
	pkgs, err := ParseDpkgStatus(strings.NewReader(status))
	if err != nil {
		t.Fatal(err)
	}
	in := Input{Name: "gw", Board: "rpi4", Version: "3", Builder: "v1.2.3", Epoch: time.Unix(1700000000, 0),
		BaseName: "https://example.com/base.img.xz", BaseSHA256: strings.Repeat("a", 64), Packages: pkgs,
		Components: []Component{{Name: "edgeimg-agent", Version: "v1.2.3", SHA256: strings.Repeat("b", 64), PURL: "pkg:golang/github.com/edgeimg/edgeimg@v1.2.3"}}}
	d := New(in)
	b := d.JSON()
	if string(New(in).JSON()) != string(b) {
		t.Fatal("not deterministic")
	}
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"spdxVersion", "dataLicense", "SPDXID", "name", "documentNamespace", "creationInfo", "packages", "relationships"} {
		if _, ok := generic[k]; !ok {
			t.Errorf("missing %s", k)
		}
	}
	if d.CreationInfo.Created != "2023-11-14T22:13:20Z" {
		t.Errorf("created %s", d.CreationInfo.Created)
	}
	ids := map[string]bool{}
	idRE := regexp.MustCompile(`^SPDXRef-[A-Za-z0-9.-]+$`)
	for _, p := range d.Packages {
		if !idRE.MatchString(p.SPDXID) || ids[p.SPDXID] {
			t.Errorf("bad or duplicate SPDXID %q", p.SPDXID)
		}
		ids[p.SPDXID] = true
	}
	for _, r := range d.Relationships {
		if !ids[r.Element] || !ids[r.Related] {
			t.Errorf("relationship to an unknown element: %+v", r)
		}
	}
	if !strings.Contains(string(b), `"referenceLocator": "pkg:deb/debian/libc6@2.36-9%2Brpt2%2Bdeb12u9?arch=arm64\u0026upstream=glibc"`) &&
		!strings.Contains(string(b), `pkg:deb/debian/libc6@2.36-9+rpt2+deb12u9?arch=arm64&upstream=glibc`) {
		t.Errorf("libc6 purl missing:\n%s", b)
	}
	if !strings.Contains(string(b), `"checksumValue": "`+strings.Repeat("b", 64)) {
		t.Error("agent checksum missing")
	}
}

func FuzzParseDpkgStatus(f *testing.F) {
	f.Add([]byte(status))
	f.Add([]byte("Package: x\nStatus: install ok installed\n Version\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pkgs, err := ParseDpkgStatus(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		d := New(Input{Name: "x", Board: "rpi4", Packages: pkgs})
		if err := json.Unmarshal(d.JSON(), new(map[string]any)); err != nil {
			t.Fatal(err)
		}
	})
}
