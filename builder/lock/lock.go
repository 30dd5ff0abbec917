package lock

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// FileName is the lock file's name, beside the spec.
const FileName = "edgeimg.lock"

// Version is the format version Write writes and Read accepts.
const Version = 1

// Lock pins what a spec names by tag or URL.
type Lock struct {
	// Images maps a normalized image reference ("docker.io/rancher/mirrored-pause:3.6") to
	// the digest it resolved to ("sha256:…"; an index digest for multi-platform images).
	Images map[string]string
	// Downloads maps a URL to the lower-case hex sha256 of its content.
	Downloads map[string]string
}

// New returns an empty lock.
func New() *Lock { return &Lock{Images: map[string]string{}, Downloads: map[string]string{}} }

// Path returns the lock file of the spec in dir.
func Path(specDir string) string { return filepath.Join(specDir, FileName) }

type file struct {
	Version   int               `yaml:"version"`
	Images    map[string]string `yaml:"images"`
	Downloads map[string]string `yaml:"downloads"`
}

const header = "# edgeimg.lock: what the tags and URLs of edgeimg.yaml resolved to. Written by\n" +
	"# `edgeimg lock` (and by `edgeimg build` when there is none, or with --update-lock).\n" +
	"# Commit it with the spec: builds then pull exactly these digests.\n"

var (
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	hexRE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Encode returns the lock's text: YAML with sorted keys, the same bytes for the same lock.
func (l *Lock) Encode() []byte {
	var b bytes.Buffer
	b.WriteString(header)
	fmt.Fprintf(&b, "version: %d\n", Version)
	section := func(name string, m map[string]string) {
		if len(m) == 0 {
			fmt.Fprintf(&b, "%s: {}\n", name)
			return
		}
		fmt.Fprintf(&b, "%s:\n", name)
		for _, k := range sortedKeys(m) {
			fmt.Fprintf(&b, "  %s: %s\n", quote(k), quote(m[k]))
		}
	}
	section("images", l.Images)
	section("downloads", l.Downloads)
	return b.Bytes()
}

// quote writes s as a YAML double-quoted scalar (JSON string syntax is valid YAML).
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Decode reads a lock file's text strictly; name is used in errors.
func Decode(data []byte, name string) (*Lock, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f file
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty lock file", name)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if f.Version != Version {
		return nil, fmt.Errorf("%s: version %d, want %d (delete it and run edgeimg lock)", name, f.Version, Version)
	}
	l := New()
	var errs []error
	for _, k := range sortedKeys(f.Images) {
		if k == "" || !digestRE.MatchString(f.Images[k]) {
			errs = append(errs, fmt.Errorf("%s: images: %q: %q is not a sha256:HEX digest", name, k, f.Images[k]))
			continue
		}
		l.Images[k] = f.Images[k]
	}
	for _, k := range sortedKeys(f.Downloads) {
		if k == "" || !hexRE.MatchString(f.Downloads[k]) {
			errs = append(errs, fmt.Errorf("%s: downloads: %q: %q is not a lower-case hex sha256", name, k, f.Downloads[k]))
			continue
		}
		l.Downloads[k] = f.Downloads[k]
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

// Read reads the lock file at path; a missing file gives (nil, nil).
func Read(path string) (*Lock, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading lock file: %w", err)
	}
	return Decode(data, path)
}

// Write writes l to path atomically (a temporary file renamed into place).
func Write(path string, l *Lock) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(l.Encode()); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// Equal reports whether two locks pin the same things.
func (l *Lock) Equal(o *Lock) bool {
	if l == nil || o == nil {
		return l == o
	}
	return bytes.Equal(l.Encode(), o.Encode())
}

// StaleError says what a build needs that the lock does not pin.
type StaleError struct {
	// File is the lock file ("" when unknown).
	File string
	// Missing are the image references and URLs the lock has no entry for, sorted.
	Missing []string
}

func (e *StaleError) Error() string {
	f := e.File
	if f == "" {
		f = FileName
	}
	return fmt.Sprintf("%s is stale: the spec now needs %s, which it does not pin; run `edgeimg lock` or build with --update-lock",
		f, strings.Join(e.Missing, ", "))
}
