package images

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestBuildGoImage(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the telemetry service twice")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	created := time.Unix(1700000000, 0).UTC()
	platforms := []v1.Platform{{OS: "linux", Architecture: "arm64"}, {OS: "linux", Architecture: "amd64"}}
	idx, err := BuildGoImage(context.Background(), root, "./manifests/telemetry", platforms, created)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("%d manifests", len(im.Manifests))
	}
	machines := map[string]elf.Machine{"arm64": elf.EM_AARCH64, "amd64": elf.EM_X86_64}
	for _, d := range im.Manifests {
		arch := d.Platform.Architecture
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != arch || cf.OS != "linux" || !cf.Created.Time.Equal(created) || cf.Config.Entrypoint[0] != GoImageBinary {
			t.Errorf("%s: config %+v", arch, cf)
		}
		bin := fileFromImage(t, img, GoImageBinary[1:])
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("%s: %v", arch, err)
		}
		if f.Machine != machines[arch] {
			t.Errorf("%s binary is %s", arch, f.Machine)
		}
		if f.Section(".interp") != nil {
			t.Errorf("%s binary is dynamically linked", arch)
		}
	}
	// Reproducible: a second build gives the same index digest.
	idx2, err := BuildGoImage(context.Background(), root, "./manifests/telemetry", platforms, created)
	if err != nil {
		t.Fatal(err)
	}
	if digestOf(t, idx) != digestOf(t, idx2) {
		t.Errorf("index digest %s then %s", digestOf(t, idx), digestOf(t, idx2))
	}
}

func fileFromImage(t *testing.T, img v1.Image, path string) []byte {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Name == path {
				b, err := io.ReadAll(tr)
				rc.Close()
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}
		rc.Close()
	}
	t.Fatalf("%s not in image", path)
	return nil
}

func TestBuildGoImageErrorNamesPackage(t *testing.T) {
	root, _ := filepath.Abs("..")
	_, err := BuildGoImage(context.Background(), root, "./does/not/exist", []v1.Platform{{OS: "linux", Architecture: "arm64"}}, time.Unix(0, 0))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("./does/not/exist")) {
		t.Fatalf("error %v", err)
	}
}
