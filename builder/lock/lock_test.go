package lock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const dig = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestRoundTrip(t *testing.T) {
	l := New()
	l.Images["docker.io/rancher/mirrored-pause:3.6"] = dig
	l.Images["ghcr.io/a/b:1"] = dig
	l.Downloads["https://github.com/k3s-io/k3s/releases/download/v1.31.4+k3s1/k3s-arm64"] = dig[7:]
	p := filepath.Join(t.TempDir(), FileName)
	if err := Write(p, l); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	want := header + "version: 1\nimages:\n" +
		"  \"docker.io/rancher/mirrored-pause:3.6\": \"" + dig + "\"\n" +
		"  \"ghcr.io/a/b:1\": \"" + dig + "\"\n" +
		"downloads:\n  \"https://github.com/k3s-io/k3s/releases/download/v1.31.4+k3s1/k3s-arm64\": \"" + dig[7:] + "\"\n"
	if string(b) != want {
		t.Errorf("lock file:\n%s\nwant:\n%s", b, want)
	}
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(l) {
		t.Errorf("read back %+v", got)
	}
	if missing, err := Read(filepath.Join(t.TempDir(), FileName)); missing != nil || err != nil {
		t.Errorf("missing lock: %v %v", missing, err)
	}
	if e := New().Encode(); !strings.HasSuffix(string(e), "version: 1\nimages: {}\ndownloads: {}\n") {
		t.Errorf("empty lock:\n%s", e)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"", "empty lock file"},
		{"version: 2\nimages: {}\ndownloads: {}\n", "version 2, want 1"},
		{"version: 1\nimages: {a: latest}\n", `"latest" is not a sha256:HEX digest`},
		{"version: 1\ndownloads: {u: ABC}\n", `"ABC" is not a lower-case hex sha256`},
		{"version: 1\nextra: 1\n", "field extra not found"},
	} {
		_, err := Decode([]byte(c.text), "edgeimg.lock")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.text, err, c.want)
		}
	}
}

func TestStaleError(t *testing.T) {
	var err error = &StaleError{File: "/x/edgeimg.lock", Missing: []string{"image docker.io/a/b:1"}}
	var s *StaleError
	if !errors.As(err, &s) || !strings.Contains(err.Error(), "/x/edgeimg.lock is stale") || !strings.Contains(err.Error(), "image docker.io/a/b:1") {
		t.Error(err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(New().Encode()))
	f.Add([]byte("version: 1\nimages: {\"a\": \"" + dig + "\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Decode(data, "fuzz")
		if err != nil {
			return
		}
		again, err := Decode(l.Encode(), "fuzz")
		if err != nil || !again.Equal(l) {
			t.Fatalf("re-encoding changed the lock: %v", err)
		}
	})
}
