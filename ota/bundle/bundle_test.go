package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"errors"
	"io"
	"strings"
	"testing"
)

// detRand is a deterministic source for test keys.
type detRand byte

func (d *detRand) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(*d)
		*d++
	}
	return len(b), nil
}

func testKey(t testing.TB, seed byte) (ed25519.PrivateKey, ed25519.PublicKey) {
	r := detRand(seed)
	privPEM, pubPEM, err := GenerateKey(&r)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(PublicKeyPEM(pk), pubPEM) {
		t.Fatal("PublicKeyPEM differs from GenerateKey's")
	}
	return sk, pk
}

func src(name string, b []byte) Source {
	return Source{Name: name, Size: int64(len(b)), Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
}

func testManifest() Manifest {
	return Manifest{Name: "demo", Version: "2", Board: "rpi4", LayoutVersion: 1, MinVersion: "0"}
}

func TestRoundTrip(t *testing.T) {
	sk, pk := testKey(t, 1)
	boot := bytes.Repeat([]byte("boot"), 1000)
	sys := bytes.Repeat([]byte("system!"), 100000)
	boot = append(boot[:100], append([]byte("root=PARTUUID=x-05"), boot[118:]...)...)
	bs := src(PartBoot, boot)
	bs.Patch = &Patch{Offset: 100, From: "a", Slots: map[string]string{"a": "root=PARTUUID=x-05", "b": "root=PARTUUID=x-06"}}
	var buf bytes.Buffer
	m, err := Write(&buf, testManifest(), sk, []Source{bs, src(PartSystem, sys)})
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if _, err := Write(&again, testManifest(), sk, []Source{bs, src(PartSystem, sys)}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two bundles of the same inputs differ")
	}
	r, err := Open(bytes.NewReader(buf.Bytes()), NewKeyring(pk))
	if err != nil {
		t.Fatal(err)
	}
	if r.KeyID() != KeyID(pk) || r.Manifest().Version != "2" || len(r.Manifest().Parts) != 2 {
		t.Fatalf("manifest %+v key %s", r.Manifest(), r.KeyID())
	}
	if r.Manifest().Parts[0].SHA256 != m.Parts[0].SHA256 {
		t.Error("manifest as read differs from the one written")
	}
	for _, want := range [][]byte{boot, sys} {
		_, pr, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(pr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("part content differs")
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the last part: %v, want io.EOF", err)
	}
}

// retar rewrites a bundle's entries through f (which may change names, sizes or contents).
func retar(t testing.TB, b []byte, f func(name string, data []byte) (string, []byte)) []byte {
	tr := tar.NewReader(bytes.NewReader(b))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		d, _ := io.ReadAll(tr)
		name, nd := f(h.Name, d)
		h.Name, h.Size = name, int64(len(nd))
		tw.WriteHeader(h)
		tw.Write(nd)
	}
	tw.Close()
	return out.Bytes()
}

func readAll(b []byte, keys Keyring) error {
	r, err := Open(bytes.NewReader(b), keys)
	if err != nil {
		return err
	}
	for {
		_, pr, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, pr); err != nil {
			return err
		}
	}
}

func TestRejects(t *testing.T) {
	sk, pk := testKey(t, 1)
	other, _ := testKey(t, 77)
	keys := NewKeyring(pk)
	sys := bytes.Repeat([]byte{7}, 50000)
	parts := []Source{src(PartBoot, []byte("boot")), src(PartSystem, sys)}
	var good bytes.Buffer
	if _, err := Write(&good, testManifest(), sk, parts); err != nil {
		t.Fatal(err)
	}
	var foreign bytes.Buffer
	if _, err := Write(&foreign, testManifest(), other, parts); err != nil {
		t.Fatal(err)
	}
	g := good.Bytes()
	cases := []struct {
		name string
		b    []byte
		want Reason
	}{
		{"unknown key", foreign.Bytes(), ErrUnknownKey},
		{"bad signature", retar(t, g, func(n string, d []byte) (string, []byte) {
			if n == ManifestFile {
				d = bytes.Replace(d, []byte(`"version":"2"`), []byte(`"version":"9"`), 1)
			}
			return n, d
		}), ErrBadSignature},
		{"hash mismatch", retar(t, g, func(n string, d []byte) (string, []byte) {
			if n == PartSystem {
				d = bytes.Clone(d)
				d[len(d)/2] ^= 1
			}
			return n, d
		}), ErrHashMismatch},
		{"size lie", retar(t, g, func(n string, d []byte) (string, []byte) {
			if n == PartSystem {
				d = append(bytes.Clone(d), 0)
			}
			return n, d
		}), ErrSizeMismatch},
		{"part renamed", retar(t, g, func(n string, d []byte) (string, []byte) {
			if n == PartSystem {
				n = "other"
			}
			return n, d
		}), ErrMalformed},
		{"extra entry", append(retar(t, g, func(n string, d []byte) (string, []byte) { return n, d })[:len(g)-1024], retar(t, g, func(n string, d []byte) (string, []byte) { return "x" + n, d })...), ErrMalformed},
		{"not a tar", []byte(strings.Repeat("x", 2000)), ErrMalformed},
		{"empty", nil, ErrTruncated},
	}
	for _, cut := range []int{10, 600, 1536, len(g) / 2, len(g) - 1500} {
		cases = append(cases, struct {
			name string
			b    []byte
			want Reason
		}{"truncated", g[:cut], ErrTruncated})
	}
	for _, c := range cases {
		err := readAll(c.b, keys)
		var e *Error
		if !errors.Is(err, c.want) || !errors.As(err, &e) {
			t.Errorf("%s: %v, want %s", c.name, err, c.want)
			continue
		}
		if e.Reason != c.want || !strings.Contains(err.Error(), string(c.want)) {
			t.Errorf("%s: error %q does not name reason %q", c.name, err, c.want)
		}
	}
	if err := readAll(g, keys); err != nil {
		t.Fatalf("the good bundle: %v", err)
	}
}

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1", "1", 0}, {"1.0", "1", 0}, {"1.10", "1.9", 1}, {"2", "10", -1},
		{"2024.11.25", "2024.2.1", 1}, {"0", "0.0.1", -1}, {"007", "7", 0},
		{"999999999999999999", "999999999999999998.9", 1},
	} {
		got, err := CompareVersions(c.a, c.b)
		if err != nil || got != c.want {
			t.Errorf("CompareVersions(%s, %s) = %d, %v; want %d", c.a, c.b, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "1.", ".1", "1..2", "v1", "1.a", "-1", "1 ", "1234567890123456789", strings.Repeat("1.", 40) + "1"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) accepted", bad)
		}
	}
}

func TestKeyParsing(t *testing.T) {
	_, pk := testKey(t, 3)
	if _, err := ParsePrivateKey(PublicKeyPEM(pk)); err == nil {
		t.Error("a public key parsed as private")
	}
	if _, err := ParsePublicKey([]byte("junk")); err == nil {
		t.Error("junk parsed as a public key")
	}
	if _, err := ParsePublicKey(append(PublicKeyPEM(pk), PublicKeyPEM(pk)...)); err == nil {
		t.Error("two PEM blocks accepted as one key")
	}
	if len(KeyID(pk)) != 64 {
		t.Error("key id is not a sha256")
	}
}

func TestManifestValidate(t *testing.T) {
	good := testManifest()
	good.Format = FormatVersion
	good.Parts = []Part{{Name: PartBoot, Size: 10, SHA256: strings.Repeat("a", 64)}, {Name: PartSystem, Size: 10, SHA256: strings.Repeat("b", 64)}}
	b, err := good.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseManifest(b); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(m *Manifest){
		"format":       func(m *Manifest) { m.Format = 2 },
		"version":      func(m *Manifest) { m.Version = "1.x" },
		"min version":  func(m *Manifest) { m.MinVersion = "" },
		"board":        func(m *Manifest) { m.Board = "RPi 4" },
		"layout":       func(m *Manifest) { m.LayoutVersion = 0 },
		"no system":    func(m *Manifest) { m.Parts = m.Parts[:1] },
		"twice":        func(m *Manifest) { m.Parts[1].Name = PartBoot },
		"size":         func(m *Manifest) { m.Parts[0].Size = -1 },
		"sum":          func(m *Manifest) { m.Parts[0].SHA256 = "ABC" },
		"unknown part": func(m *Manifest) { m.Parts[0].Name = "kernel" },
		"patch outside": func(m *Manifest) {
			m.Parts[0].Patch = &Patch{Offset: 8, From: "a", Slots: map[string]string{"a": "xyz"}}
		},
		"patch lengths": func(m *Manifest) {
			m.Parts[0].Patch = &Patch{Offset: 0, From: "a", Slots: map[string]string{"a": "xy", "b": "xyz"}}
		},
		"patch from": func(m *Manifest) {
			m.Parts[0].Patch = &Patch{Offset: 0, From: "c", Slots: map[string]string{"a": "xy"}}
		},
	} {
		m := good
		m.Parts = append([]Part(nil), good.Parts...)
		edit(&m)
		if err := m.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for name, raw := range map[string]string{
		"unknown field": strings.Replace(string(b), `"name"`, `"nope":1,"name"`, 1),
		"trailing":      string(b) + " ",
		"not canonical": strings.Replace(string(b), `{"format"`, `{ "format"`, 1),
		"duplicate":     strings.Replace(string(b), `"board":"rpi4"`, `"board":"rpi5","board":"rpi4"`, 1),
	} {
		if _, err := ParseManifest([]byte(raw)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want malformed", name, err)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	m := testManifest()
	m.Format = FormatVersion
	m.Parts = []Part{{Name: PartBoot, Size: 10, SHA256: strings.Repeat("a", 64),
		Patch: &Patch{Offset: 1, From: "a", Slots: map[string]string{"a": "x", "b": "y"}}},
		{Name: PartSystem, Size: 10, SHA256: strings.Repeat("b", 64)}}
	b, _ := m.Marshal()
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"format":1,"parts":[{"size":-1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not a *bundle.Error", err)
			}
			return
		}
		again, err := m.Marshal()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted manifest does not re-encode to itself: %v", err)
		}
	})
}

func FuzzOpen(f *testing.F) {
	sk, pk := testKey(f, 1)
	var good bytes.Buffer
	if _, err := Write(&good, testManifest(), sk, []Source{src(PartBoot, []byte("boot")), src(PartSystem, []byte("system"))}); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:700])
	keys := NewKeyring(pk)
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := readAll(data, keys); err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not a *bundle.Error", err)
			}
		}
	})
}
