package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxSpecSize bounds the size of a spec file; a spec is a short hand-written text.
const maxSpecSize = 1 << 20

// maxDecodeErrors bounds the problems Decode reports; past it, a spec is not worth reading on.
const maxDecodeErrors = 50

// DecodeError is a problem in the text of a spec, at a line of its file.
type DecodeError struct {
	File string // the file name as given to Load or Decode
	Line int    // 1-based; 0 when the problem has no single line
	Msg  string
}

// Error formats the problem as FILE:LINE: MESSAGE.
func (e *DecodeError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// Load reads the spec file at path with Decode, then resolves its relative paths
// (base.image when it is not a URL, overlays, output.dir) against the file's directory,
// storing absolute paths, and records that directory in Dir.
func Load(path string) (*Spec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading spec: %w", err)
	}
	defer f.Close()
	s, err := Decode(f, path)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("resolving the directory of %s: %w", path, err)
	}
	s.resolvePaths(dir)
	return s, nil
}

// Decode reads a spec from r: a single YAML (or JSON) document whose fields are all known.
// Errors name the file (name), the line and the field. Relative paths are left as they are;
// defaults are not applied.
func Decode(r io.Reader, name string) (*Spec, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxSpecSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(data) > maxSpecSize {
		return nil, &DecodeError{File: name, Msg: fmt.Sprintf("larger than %d bytes: a spec is a small text file", maxSpecSize)}
	}

	// 1. Parse into a node tree: one document, no more.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, &DecodeError{File: name, Msg: "the spec is empty"}
		}
		return nil, yamlError(name, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, &DecodeError{File: name, Line: next.Line, Msg: "a second YAML document: a spec is a single document (remove the '---')"}
	case err != io.EOF:
		return nil, yamlError(name, err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, &DecodeError{File: name, Msg: "the spec is empty"}
		}
		root = root.Content[0]
	}
	if isNull(root) {
		return nil, &DecodeError{File: name, Line: root.Line, Msg: "the spec is empty"}
	}

	// 2. Check the shape against the Go type, naming fields and lines.
	w := walker{file: name, seen: map[walkKey]bool{}}
	w.walk(root, reflect.TypeFor[Spec](), "")
	if len(w.errs) > 0 {
		return nil, errors.Join(w.errs...)
	}

	// 3. Decode strictly; the walk above should have caught everything this can report.
	var s Spec
	dec = yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		return nil, yamlError(name, err)
	}
	s.normalize()
	s.File = name
	return &s, nil
}

// normalize makes empty lists nil, so that a spec and its re-encoding compare equal.
func (s *Spec) normalize() {
	s.Overlays = nilIfEmpty(s.Overlays)
	s.Users = nilIfEmpty(s.Users)
	for i := range s.Users {
		s.Users[i].Groups = nilIfEmpty(s.Users[i].Groups)
		s.Users[i].SSHAuthorizedKeys = nilIfEmpty(s.Users[i].SSHAuthorizedKeys)
	}
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// resolvePaths makes the spec's relative paths absolute against dir and records dir.
func (s *Spec) resolvePaths(dir string) {
	s.Dir = dir
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	if !isURL(s.Base.Image) {
		s.Base.Image = abs(s.Base.Image)
	}
	for i := range s.Overlays {
		s.Overlays[i] = abs(s.Overlays[i])
	}
	s.Output.Dir = abs(s.Output.Dir)
	s.Fleet.resolvePaths(dir)
	s.resolveK3sPaths(abs)
	s.OTA.resolvePaths(abs)
}

var urlSchemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)

// isURL reports whether s starts with a URL scheme ("https://…").
func isURL(s string) bool { return urlSchemeRE.MatchString(s) }

// yamlLineRE matches the position yaml.v3 puts in its messages.
var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlError turns a yaml.v3 error into DecodeErrors that name the file and the line.
func yamlError(name string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		errs := make([]error, len(te.Errors))
		for i, m := range te.Errors {
			errs[i] = positioned(name, m)
		}
		return errors.Join(errs...)
	}
	return positioned(name, err.Error())
}

func positioned(name, msg string) *DecodeError {
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &DecodeError{File: name, Line: line, Msg: m[2]}
	}
	return &DecodeError{File: name, Msg: strings.TrimPrefix(msg, "yaml: ")}
}

// walker checks a node tree against a Go type before it is decoded, so that every problem is
// reported with its line and the path of its field (users[1].uid).
type walker struct {
	file string
	errs []error
	seen map[walkKey]bool // aliases may share nodes: check each node once per type
}

type walkKey struct {
	n *yaml.Node
	t reflect.Type
}

var sizeType = reflect.TypeFor[Size]()

func (w *walker) errorf(n *yaml.Node, format string, args ...any) {
	switch {
	case len(w.errs) < maxDecodeErrors:
		w.errs = append(w.errs, &DecodeError{File: w.file, Line: n.Line, Msg: fmt.Sprintf(format, args...)})
	case len(w.errs) == maxDecodeErrors:
		w.errs = append(w.errs, &DecodeError{File: w.file, Line: n.Line, Msg: "too many errors"})
	}
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	k := walkKey{n, t}
	if w.seen[k] {
		return
	}
	w.seen[k] = true
	if isNull(n) {
		return
	}
	if t == sizeType {
		if _, err := sizeFromNode(n); err != nil {
			w.errorf(n, "%s: %v", path, err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		w.walk(n, t.Elem(), path)
	case reflect.Struct:
		w.walkStruct(n, t, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.errorf(n, "%s: expected a list, got %s", path, describe(n))
			return
		}
		for i, c := range n.Content {
			w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.errorf(n, "%s: expected a mapping, got %s", path, describe(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			w.walk(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value)
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			w.errorf(n, "%s: expected a string, got %s", path, describe(n))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			w.errorf(n, "%s: expected a whole number, got %s", path, describe(n))
			return
		}
		if _, err := strconv.ParseInt(n.Value, 10, t.Bits()); err != nil {
			w.errorf(n, "%s: %q is not a decimal whole number in range", path, n.Value)
		}
	}
}

func (w *walker) walkStruct(n *yaml.Node, t reflect.Type, path string) {
	where := path
	if where == "" {
		where = "spec"
	}
	if n.Kind != yaml.MappingNode {
		w.errorf(n, "%s: expected a mapping of fields, got %s", where, describe(n))
		return
	}
	fields, names := yamlFields(t)
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		if key.Kind == yaml.ScalarNode && key.ShortTag() == "!!merge" {
			w.walkMerge(val, t, path)
			continue
		}
		if key.Kind != yaml.ScalarNode {
			w.errorf(key, "%s: expected a field name, got %s", where, describe(key))
			continue
		}
		ft, ok := fields[key.Value]
		if !ok {
			msg := fmt.Sprintf("field %q not found in %s", key.Value, where)
			if s := suggest(key.Value, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			w.errorf(key, "%s", msg)
			continue
		}
		if line, dup := first[key.Value]; dup {
			w.errorf(key, "field %q is set twice in %s (first at line %d)", key.Value, where, line)
			continue
		}
		first[key.Value] = key.Line
		w.walk(val, ft, joinPath(path, key.Value))
	}
}

// walkMerge checks the value of a YAML merge key ("<<: *defaults"): a mapping or a list of
// mappings whose fields belong to the struct being merged into.
func (w *walker) walkMerge(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.SequenceNode {
		for _, c := range n.Content {
			w.walk(c, t, path)
		}
		return
	}
	w.walk(n, t, path)
}

func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// yamlFields returns the fields of struct type t by their YAML names, and the names sorted.
func yamlFields(t reflect.Type) (map[string]reflect.Type, []string) {
	fields := map[string]reflect.Type{}
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("yaml")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if strings.Contains(","+opts+",", ",inline,") {
				add(f.Type)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields[name] = f.Type
		}
	}
	add(t)
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	return fields, names
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	case yaml.AliasNode:
		return "alias"
	case yaml.DocumentNode:
		return "document"
	}
	return "node"
}

// describe names what a node holds, for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("the string %q", v)
		case "!!int", "!!float":
			return "the number " + v
		case "!!bool":
			return "the boolean " + v
		}
		return fmt.Sprintf("%q", v)
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "a " + kindName(n.Kind)
}

// suggest returns the name closest to an unknown field name, or "" if none is close.
func suggest(name string, names []string) string {
	best, bestDist := "", -1
	lower := strings.ToLower(name)
	for _, c := range names {
		lc := strings.ToLower(c)
		d := levenshtein(lower, lc)
		ok := d <= max(1, len(c)/3) ||
			(len(lower) >= 4 && (strings.HasPrefix(lc, lower) || strings.HasPrefix(lower, lc) || subsequence(lower, lc)))
		if ok && (bestDist < 0 || d < bestDist) {
			best, bestDist = c, d
		}
	}
	return best
}

// subsequence reports whether the bytes of a appear in b in order ("sshkeys" in
// "sshauthorizedkeys").
func subsequence(a, b string) bool {
	for i := 0; i < len(b) && len(a) > 0; i++ {
		if a[0] == b[i] {
			a = a[1:]
		}
	}
	return a == ""
}

func levenshtein(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
