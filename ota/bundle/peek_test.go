package bundle

import (
	"bytes"
	"errors"
	"testing"
)

func TestPeekManifest(t *testing.T) {
	sk, pk := testKey(t, 1)
	other, _ := testKey(t, 2)
	var buf bytes.Buffer
	if _, err := Write(&buf, testManifest(), sk, []Source{src(PartBoot, []byte("boot")), src(PartSystem, []byte("system"))}); err != nil {
		t.Fatal(err)
	}
	m, id, err := PeekManifest(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "2" || m.Board != "rpi4" || m.Name != "demo" || id != KeyID(pk) {
		t.Errorf("peek: %+v key %s", m, id)
	}
	// A bundle signed by another key peeks the same: no verification happens.
	var forged bytes.Buffer
	if _, err := Write(&forged, testManifest(), other, []Source{src(PartBoot, []byte("boot")), src(PartSystem, []byte("system"))}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(bytes.NewReader(forged.Bytes()), NewKeyring(pk)); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Open of the forged bundle: %v", err)
	}
	if m, _, err := PeekManifest(bytes.NewReader(forged.Bytes())); err != nil || m.Version != "2" {
		t.Errorf("peek forged: %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":     nil,
		"not a tar": []byte("hello, this is not a bundle at all"),
		"truncated": buf.Bytes()[:700],
		"bad manifest": retar(t, buf.Bytes(), func(n string, d []byte) (string, []byte) {
			if n == ManifestFile {
				return n, []byte(`{"format":1}`)
			}
			return n, d
		}),
	} {
		if _, _, err := PeekManifest(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: no error", name)
		} else if e := new(Error); !errors.As(err, &e) {
			t.Errorf("%s: %v is not a *bundle.Error", name, err)
		}
	}
}

// FuzzPeekManifest: any input gives a valid manifest or a *bundle.Error, never a panic.
func FuzzPeekManifest(f *testing.F) {
	sk, _ := testKey(f, 1)
	var good bytes.Buffer
	if _, err := Write(&good, testManifest(), sk, []Source{src(PartBoot, []byte("boot")), src(PartSystem, []byte("system"))}); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:1100])
	f.Fuzz(func(t *testing.T, data []byte) {
		m, _, err := PeekManifest(bytes.NewReader(data))
		if err != nil {
			if e := new(Error); !errors.As(err, &e) {
				t.Fatalf("error %v is not a *bundle.Error", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("peeked an invalid manifest: %v", err)
		}
	})
}
