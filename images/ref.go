package images

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// ErrLatest is returned for references that are, explicitly or implicitly, tagged "latest".
var ErrLatest = errors.New(`tag "latest" (explicit or implied) is not allowed: K3s would pull it from the network at runtime; pin a version tag or a digest`)

// ParseReference parses an image reference strictly and refuses ":latest" and untagged
// references. "repo:tag@sha256:…" is accepted and treated as its digest.
func ParseReference(s string) (name.Reference, error) {
	if s == "" || strings.TrimSpace(s) != s {
		return nil, fmt.Errorf("image reference %q: empty or surrounded by spaces", s)
	}
	ref, err := name.ParseReference(s)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", s, err)
	}
	if t, ok := ref.(name.Tag); ok {
		last := s[strings.LastIndexByte(s, '/')+1:]
		if !strings.Contains(last, ":") || t.TagStr() == "latest" {
			return nil, fmt.Errorf("image reference %q: %w", s, ErrLatest)
		}
	}
	return ref, nil
}

// Normalize returns the reference as containerd (and so K3s and the kubelet) names it:
// "docker.io/library/nginx:1.27" for "nginx:1.27", "docker.io/x/y@sha256:…" for a digest.
func Normalize(ref name.Reference) string {
	repo := RepoName(ref.Context())
	if d, ok := ref.(name.Digest); ok {
		return repo + "@" + d.DigestStr()
	}
	return repo + ":" + ref.Identifier()
}

// RepoName returns the repository in containerd's normalized form ("docker.io/library/nginx").
func RepoName(repo name.Repository) string {
	return registryName(repo.RegistryStr()) + "/" + repo.RepositoryStr()
}

func registryName(r string) string {
	switch r {
	case name.DefaultRegistry, "docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return r
}
