package images

import (
	"errors"
	"strings"
	"testing"
)

func TestParseReference(t *testing.T) {
	for in, want := range map[string]string{
		"nginx:1.27":                     "docker.io/library/nginx:1.27",
		"rancher/mirrored-pause:3.6":     "docker.io/rancher/mirrored-pause:3.6",
		"index.docker.io/rancher/x:1":    "docker.io/rancher/x:1",
		"ghcr.io/acme/app:v1":            "ghcr.io/acme/app:v1",
		"127.0.0.1:5000/a/b:c":           "127.0.0.1:5000/a/b:c",
		"quay.io/x/y@sha256:" + hex64:    "quay.io/x/y@sha256:" + hex64,
		"quay.io/x/y:v1@sha256:" + hex64: "quay.io/x/y@sha256:" + hex64,
	} {
		ref, err := ParseReference(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := Normalize(ref); got != want {
			t.Errorf("Normalize(%s) = %s, want %s", in, got, want)
		}
	}
	for _, in := range []string{"nginx", "nginx:latest", "ghcr.io/acme/app:latest", "ghcr.io/acme/app"} {
		_, err := ParseReference(in)
		if !errors.Is(err, ErrLatest) || !strings.Contains(err.Error(), in) {
			t.Errorf("%s: got %v, want ErrLatest naming it", in, err)
		}
	}
	for _, in := range []string{"", " nginx:1", "UPPER/case:1", "a/b:c@sha256:short"} {
		if _, err := ParseReference(in); err == nil {
			t.Errorf("%q: accepted", in)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestK3sImageListsAreComplete(t *testing.T) {
	components := []string{
		"docker.io/rancher/klipper-helm", "docker.io/rancher/klipper-lb", "docker.io/rancher/local-path-provisioner",
		"docker.io/rancher/mirrored-coredns-coredns", "docker.io/rancher/mirrored-library-busybox",
		"docker.io/rancher/mirrored-library-traefik", "docker.io/rancher/mirrored-metrics-server", "docker.io/rancher/mirrored-pause",
	}
	versions := K3sVersions()
	if len(versions) == 0 || versions[0] == "" {
		t.Fatal("no K3s versions")
	}
	for _, v := range versions {
		list, err := K3sImages(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		repos := map[string]int{}
		for _, s := range list {
			ref, err := ParseReference(s)
			if err != nil {
				t.Fatalf("%s: %v", v, err)
			}
			if Normalize(ref) != s {
				t.Errorf("%s: %s is not written fully qualified (%s)", v, s, Normalize(ref))
			}
			repos[RepoName(ref.Context())]++
		}
		for _, c := range components {
			if repos[c] != 1 {
				t.Errorf("%s: %s appears %d times", v, c, repos[c])
			}
		}
		if len(list) != len(components) {
			t.Errorf("%s: %d images, want %d", v, len(list), len(components))
		}
	}
	want := map[string]string{
		"docker.io/rancher/mirrored-pause":           "3.6",
		"docker.io/rancher/mirrored-coredns-coredns": "1.12.0",
		"docker.io/rancher/mirrored-library-traefik": "2.11.10",
	}
	list, _ := K3sImages("v1.31.4+k3s1")
	for _, s := range list {
		ref, _ := ParseReference(s)
		if w, ok := want[RepoName(ref.Context())]; ok && ref.Identifier() != w {
			t.Errorf("v1.31.4+k3s1: %s, want tag %s", s, w)
		}
	}
	if _, err := K3sImages("v1.99.0+k3s1"); err == nil || !strings.Contains(err.Error(), "v1.31.4+k3s1") {
		t.Errorf("unknown version: %v", err)
	}
}
