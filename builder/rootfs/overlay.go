package rootfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// AttrsFile is the name of the optional file at an overlay's root that sets ownership and
// modes of the overlay's files. It is not copied into the image.
const AttrsFile = ".edgeimg-attrs.yaml"

// AttrRule sets the owner, group or mode of the overlay entries whose image path matches Path
// (a path.Match pattern such as /usr/local/bin/*; with Recursive, everything below it too).
// Rules apply in order; a later rule wins.
type AttrRule struct {
	Path      string `yaml:"path"`
	Owner     string `yaml:"owner,omitempty"` // user name in the image's /etc/passwd, or a number
	Group     string `yaml:"group,omitempty"` // group name in the image's /etc/group, or a number
	Mode      string `yaml:"mode,omitempty"`  // octal, e.g. "0750" or "4755"
	Recursive bool   `yaml:"recursive,omitempty"`
}

// ApplyOverlay lays the directory tree dir over t. Files become root:root with mode 0644, or
// 0755 when any execute bit is set on disk (so the result does not depend on the umask of
// the machine that checked the overlay out); directories new to the tree are 0755; directories
// the tree has keep their metadata; symlinks are kept as they are. AttrsFile rules override.
// Every timestamp is epoch. Parent paths that are symlinks in the tree (merged /usr: /bin →
// usr/bin) are followed. It returns the image paths it wrote.
func ApplyOverlay(t *tree.Tree, dir string, epoch time.Time) ([]string, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("overlay %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("overlay %s: not a directory", dir)
	}
	rules, err := readAttrs(filepath.Join(dir, AttrsFile))
	if err != nil {
		return nil, err
	}
	ids := newIDResolver(t)
	var wrote []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("overlay %s: %w", dir, err)
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if rel == "." || rel == AttrsFile {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("overlay %s: %w", p, err)
		}
		target, err := resolveParents(t, rel)
		if err != nil {
			return fmt.Errorf("overlay %s: %s: %w", dir, rel, err)
		}
		e := &tree.Entry{Path: target, ModTime: epoch}
		switch {
		case info.Mode().IsRegular():
			e.Kind, e.Size, e.Content = tree.Regular, info.Size(), tree.File(p)
			e.Mode = 0o644
			if info.Mode().Perm()&0o111 != 0 {
				e.Mode = 0o755
			}
		case info.IsDir():
			if old := t.Get(target); old != nil && old.Kind == tree.Symlink {
				// A directory of the overlay where the tree has a symlink (merged /usr: bin →
				// usr/bin): its files go through the link, the link stays.
				if dst, err := resolveParents(t, rel+"/_"); err == nil {
					if d := t.Get(path.Dir(dst)); d != nil && d.Kind == tree.Dir {
						return nil
					}
				}
				return fmt.Errorf("overlay %s: %s is a directory, but /%s is a symlink to %s, which is not a directory in the image", dir, rel, target, old.Linkname)
			}
			e.Kind, e.Mode = tree.Dir, 0o755
			if old := t.Get(target); old != nil && old.Kind == tree.Dir {
				c := *old
				e = &c
			}
		case info.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("overlay %s: %w", p, err)
			}
			e.Kind, e.Mode, e.Linkname = tree.Symlink, 0o777, l
		default:
			return fmt.Errorf("overlay %s: %s is a %s; overlays hold files, directories and symlinks only", dir, rel, info.Mode().Type())
		}
		if err := applyRules(e, "/"+rel, rules, ids); err != nil {
			return fmt.Errorf("overlay %s: %w", dir, err)
		}
		if err := t.Put(e); err != nil {
			return fmt.Errorf("overlay %s: %w", dir, err)
		}
		wrote = append(wrote, "/"+target)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(wrote)
	return wrote, nil
}

func readAttrs(p string) ([]AttrRule, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var rules []AttrRule
	if err := dec.Decode(&rules); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	for i, r := range rules {
		if !strings.HasPrefix(r.Path, "/") {
			return nil, fmt.Errorf("%s: [%d].path: %q must be an absolute image path", p, i, r.Path)
		}
		if _, err := path.Match(r.Path, "/"); err != nil {
			return nil, fmt.Errorf("%s: [%d].path: %q: %w", p, i, r.Path, err)
		}
		if r.Mode != "" {
			if m, err := strconv.ParseUint(r.Mode, 8, 32); err != nil || m > 0o7777 {
				return nil, fmt.Errorf("%s: [%d].mode: %q is not an octal mode up to 7777", p, i, r.Mode)
			}
		}
	}
	return rules, nil
}

func applyRules(e *tree.Entry, p string, rules []AttrRule, ids *idResolver) error {
	for _, r := range rules {
		ok, _ := path.Match(r.Path, p)
		if !ok && r.Recursive {
			ok = strings.HasPrefix(p, strings.TrimSuffix(r.Path, "/")+"/")
		}
		if !ok {
			continue
		}
		if r.Owner != "" {
			id, err := ids.lookup("etc/passwd", r.Owner)
			if err != nil {
				return fmt.Errorf("%s: owner: %w", AttrsFile, err)
			}
			e.UID = id
		}
		if r.Group != "" {
			id, err := ids.lookup("etc/group", r.Group)
			if err != nil {
				return fmt.Errorf("%s: group: %w", AttrsFile, err)
			}
			e.GID = id
		}
		if r.Mode != "" && e.Kind != tree.Symlink {
			m, _ := strconv.ParseUint(r.Mode, 8, 32)
			e.Mode = uint32(m)
		}
	}
	return nil
}

type idResolver struct {
	t     *tree.Tree
	cache map[string]map[string]uint32
}

func newIDResolver(t *tree.Tree) *idResolver {
	return &idResolver{t: t, cache: map[string]map[string]uint32{}}
}

func (r *idResolver) lookup(file, name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	m, ok := r.cache[file]
	if !ok {
		m = map[string]uint32{}
		b, err := r.t.ReadFile(file)
		if err != nil {
			return 0, fmt.Errorf("%q: the image has no /%s", name, file)
		}
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Split(l, ":")
			if len(f) >= 3 {
				if n, err := strconv.ParseUint(f[2], 10, 32); err == nil {
					m[f[0]] = uint32(n)
				}
			}
		}
		r.cache[file] = m
	}
	id, ok := m[name]
	if !ok {
		return 0, fmt.Errorf("%q is not in the image's /%s", name, file)
	}
	return id, nil
}

// resolveParents returns p with every parent directory that is a symlink in t replaced by its
// target, so an overlay's bin/x lands in usr/bin/x on a merged-/usr base. The last component
// is not followed. Targets leaving the root are refused.
func resolveParents(t *tree.Tree, p string) (string, error) {
	parts := strings.Split(tree.Clean(p), "/")
	cur := ""
	for hops := 0; len(parts) > 1; {
		next := path.Join(cur, parts[0])
		e := t.Get(next)
		if e != nil && e.Kind == tree.Symlink {
			if hops++; hops > 40 {
				return "", errors.New("too many levels of symbolic links")
			}
			tgt := e.Linkname
			if !strings.HasPrefix(tgt, "/") {
				tgt = path.Join("/", cur, tgt)
			}
			if strings.HasPrefix(path.Clean(e.Linkname), "..") && cur == "" {
				return "", fmt.Errorf("/%s points outside the root", next)
			}
			rest := append(strings.Split(tree.Clean(tgt), "/"), parts[1:]...)
			cur, parts = "", rest
			continue
		}
		cur, parts = next, parts[1:]
	}
	return path.Join(cur, parts[0]), nil
}
