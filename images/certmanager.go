package images

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed certmanager/*.txt
var certManagerLists embed.FS

// CertManagerVersions lists the cert-manager releases this repository has an image list for,
// sorted.
func CertManagerVersions() []string {
	entries, _ := fs.ReadDir(certManagerLists, "certmanager")
	var out []string
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(e.Name(), ".txt"))
	}
	sort.Strings(out)
	return out
}

// CertManagerImages returns the images of a cert-manager release (controller, webhook,
// cainjector, acmesolver, startupapicheck) as fully qualified references, from
// images/certmanager/VERSION.txt. A version without a list is an error naming those there are.
func CertManagerImages(version string) ([]string, error) {
	data, err := certManagerLists.ReadFile("certmanager/" + version + ".txt")
	if err != nil {
		return nil, fmt.Errorf("cert-manager version %q: no image list in images/certmanager (have %s)", version, strings.Join(CertManagerVersions(), ", "))
	}
	return parseList(data)
}
