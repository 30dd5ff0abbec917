package images

import (
	"bufio"
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed k3s/*.txt
var k3sLists embed.FS

// K3sVersions lists the K3s versions this repository has a system image list for, sorted.
func K3sVersions() []string {
	entries, _ := fs.ReadDir(k3sLists, "k3s")
	var out []string
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(e.Name(), ".txt"))
	}
	sort.Strings(out)
	return out
}

// K3sImages returns the system images (pause, coredns, traefik, ...) of a K3s release, as
// the fully qualified references of the release's k3s-images.txt. A version the repository
// has no list for is an error naming the versions it has.
func K3sImages(version string) ([]string, error) {
	data, err := k3sLists.ReadFile("k3s/" + version + ".txt")
	if err != nil {
		return nil, fmt.Errorf("k3s version %q: no image list in images/k3s (have %s)", version, strings.Join(K3sVersions(), ", "))
	}
	return parseList(data)
}

func parseList(data []byte) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		if _, err := ParseReference(line); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, line)
	}
	return out, sc.Err()
}
