package sbom

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Package is one installed Debian package.
type Package struct {
	Name         string
	Version      string
	Architecture string
	Source       string // source package name, without its version ("" = same as Name)
	Homepage     string
	Maintainer   string
}

// maxStatusSize bounds what ParseDpkgStatus reads: the status file of a full desktop system
// is a few MiB.
const maxStatusSize = 64 << 20

// ParseDpkgStatus reads a dpkg status file (deb822 stanzas) and returns the packages whose
// Status is "install ok installed", sorted by name and architecture. Malformed input gives an
// error naming the line.
func ParseDpkgStatus(r io.Reader) ([]Package, error) {
	sc := bufio.NewScanner(io.LimitReader(r, maxStatusSize+1))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var (
		pkgs   []Package
		fields = map[string]string{}
		last   string
		line   int
		read   int
	)
	flush := func() error {
		defer func() { fields, last = map[string]string{}, "" }()
		if len(fields) == 0 {
			return nil
		}
		if fields["Package"] == "" {
			return fmt.Errorf("dpkg status: stanza ending at line %d has no Package field", line)
		}
		if fields["Status"] != "install ok installed" {
			return nil
		}
		src := fields["Source"]
		if i := strings.IndexByte(src, ' '); i >= 0 {
			src = src[:i] // "Source: glibc (2.36-9)"
		}
		pkgs = append(pkgs, Package{Name: fields["Package"], Version: fields["Version"],
			Architecture: fields["Architecture"], Source: src, Homepage: fields["Homepage"], Maintainer: fields["Maintainer"]})
		return nil
	}
	for sc.Scan() {
		line++
		b := sc.Bytes()
		read += len(b) + 1
		if read > maxStatusSize {
			return nil, fmt.Errorf("dpkg status: larger than %d bytes", maxStatusSize)
		}
		if len(bytes.TrimSpace(b)) == 0 {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		if b[0] == ' ' || b[0] == '\t' {
			if last == "" {
				return nil, fmt.Errorf("dpkg status: line %d: continuation line outside a field", line)
			}
			continue // multi-line values (Description, Conffiles) are not needed
		}
		k, v, ok := strings.Cut(string(b), ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("dpkg status: line %d: %q is not a field", line, truncate(string(b)))
		}
		last = k
		fields[k] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("dpkg status: line %d: %w", line+1, err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	sort.Slice(pkgs, func(i, j int) bool {
		if pkgs[i].Name != pkgs[j].Name {
			return pkgs[i].Name < pkgs[j].Name
		}
		return pkgs[i].Architecture < pkgs[j].Architecture
	})
	return pkgs, nil
}

func truncate(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
