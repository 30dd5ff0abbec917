package payload

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/edgeimg/edgeimg/builder/lock"
	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/images"
	"github.com/edgeimg/edgeimg/manifests/certmanager"
	"github.com/edgeimg/edgeimg/manifests/check"
	"github.com/edgeimg/edgeimg/manifests/plan"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	sigsyaml "sigs.k8s.io/yaml"
)

// Where the payload goes in the read-only system slot. At boot they are made visible at
// /var/lib/rancher/k3s/agent/images/ and /var/lib/rancher/k3s/server/manifests/.
const (
	ImagesDir    = "usr/lib/edgeimg/k3s/images"
	ManifestsDir = "usr/lib/edgeimg/k3s/manifests"
)

// Inputs are the spec fields the payload stage needs.
type Inputs struct {
	// K3sVersion selects the system image list (images/k3s/VERSION.txt).
	K3sVersion string
	// Manifests are files or directories of Kubernetes YAML.
	Manifests []string
	// Images are extra images (spec images:).
	Images []string
	// Pins maps normalized references to digests (the lock file); may be nil.
	Pins map[string]string
	// Mirrors and Auth are the spec's registries.mirrors and registries.auth.
	Mirrors map[string]string
	Auth    map[string]authn.AuthConfig
	// CacheDir is the content-addressed image cache.
	CacheDir string
	// Board and AllowOvercommit drive the memory plan.
	Board           plan.Board
	AllowOvercommit bool
	// CertManager installs cert-manager: its HelmChart (the chart inside) and CA issuers
	// are added to the manifests, its images to the pulls, and it is counted in the plan.
	CertManager bool
	// CertManagerVersion is the cert-manager release; default certmanager.DefaultVersion.
	CertManagerVersion string
	// Locked makes an image without a pin in Pins an error (*lock.StaleError) instead of a
	// tag resolved in the registry: the lock file is stale.
	Locked bool
	// LockFile names the lock file in that error.
	LockFile string
	// Role is the K3s role budgeted by the plan: server (default) or agent.
	Role string
	// Epoch is the modification time of every file written.
	Epoch time.Time
	// Puller options beyond mirrors and auth (tests pass WithKeychain, WithConcurrency).
	PullOptions []images.Option
}

// Result is what the stage produced.
type Result struct {
	// Images are the pulled images, sorted by reference; their Digest is the lock entry.
	Images []images.Image
	// Plan is the memory plan.
	Plan plan.Plan
	// Notes say what was generated (LimitRanges).
	Notes []string
}

// Assemble runs the payload stage into t:
//  1. load and strictly decode the manifests;
//  2. apply the policy and find every image they use;
//  3. make the memory plan and fail when it does not fit;
//  4. pull the K3s system images, the manifests' images and the extra images for linux/arm64;
//  5. write one air-gap archive per image into ImagesDir;
//  6. write the manifests (and generated LimitRanges, and cert-manager's) into ManifestsDir.
func Assemble(ctx context.Context, in Inputs, t *tree.Tree) (Result, error) {
	// 1.–4.
	res, found, err := resolve(ctx, in)
	if err != nil {
		return Result{}, err
	}
	// 5.
	if err := t.MkdirAll(ImagesDir, in.Epoch); err != nil {
		return Result{}, err
	}
	for _, img := range res.Images {
		if err := putArchive(t, img, in.Epoch); err != nil {
			return Result{}, fmt.Errorf("writing image archives: %w", err)
		}
	}
	// 6.
	extra, err := certManagerManifests(in)
	if err != nil {
		return Result{}, err
	}
	if err := putManifests(t, in.Manifests, extra, found, in.Epoch); err != nil {
		return Result{}, fmt.Errorf("writing manifests: %w", err)
	}
	return res, nil
}

// Resolve runs steps 1 to 4 of Assemble and writes nothing: the manifests are checked, the
// plan made and checked, and every image pulled into the cache. `edgeimg lock` uses it.
func Resolve(ctx context.Context, in Inputs) (Result, error) {
	res, _, err := resolve(ctx, in)
	return res, err
}

// Plan runs steps 1 to 3 of Assemble without checking the plan: what `edgeimg plan` shows.
func Plan(in Inputs) (plan.Plan, error) {
	objs, err := load(in)
	if err != nil {
		return plan.Plan{}, err
	}
	if _, err := check.Check(objs); err != nil {
		return plan.Plan{}, fmt.Errorf("checking manifests: %w", err)
	}
	return plan.Make(in.Board, objs, plan.Options{Role: in.Role, CertManager: in.CertManager}), nil
}

// load decodes the manifests, and cert-manager's when it is on.
func load(in Inputs) ([]check.Object, error) {
	objs, err := check.Load(in.Manifests)
	if err != nil {
		return nil, fmt.Errorf("decoding manifests: %w", err)
	}
	extra, err := certManagerManifests(in)
	if err != nil {
		return nil, err
	}
	for _, m := range extra {
		o, err := check.Decode(m.Name, m.Data)
		if err != nil {
			return nil, fmt.Errorf("decoding cert-manager's manifests: %w", err)
		}
		objs = append(objs, o...)
	}
	return objs, nil
}

// certManagerManifests returns cert-manager's manifests when in.CertManager, else none.
func certManagerManifests(in Inputs) ([]certmanager.Manifest, error) {
	if !in.CertManager {
		return nil, nil
	}
	ms, err := certmanager.Manifests(certManagerVersion(in))
	if err != nil {
		return nil, fmt.Errorf("certManager.version: %w", err)
	}
	return ms, nil
}

func certManagerVersion(in Inputs) string {
	if in.CertManagerVersion == "" {
		return certmanager.DefaultVersion
	}
	return in.CertManagerVersion
}

func resolve(ctx context.Context, in Inputs) (Result, check.Result, error) {
	// 1.
	objs, err := load(in)
	if err != nil {
		return Result{}, check.Result{}, err
	}
	// 2.
	found, err := check.Check(objs)
	if err != nil {
		return Result{}, check.Result{}, fmt.Errorf("checking manifests: %w", err)
	}
	// 3.
	p := plan.Make(in.Board, objs, plan.Options{Role: in.Role, CertManager: in.CertManager})
	if err := plan.Check(p, in.AllowOvercommit); err != nil {
		return Result{}, check.Result{}, fmt.Errorf("memory plan: %w", err)
	}
	// 4.
	reqs, err := requests(in, found)
	if err != nil {
		return Result{}, check.Result{}, err
	}
	opts := append([]images.Option{images.WithMirrors(in.Mirrors), images.WithAuth(in.Auth)}, in.PullOptions...)
	puller, err := images.NewPuller(in.CacheDir, opts...)
	if err != nil {
		return Result{}, check.Result{}, fmt.Errorf("registries: %w", err)
	}
	pulled, err := puller.Pull(ctx, reqs)
	if err != nil {
		return Result{}, check.Result{}, fmt.Errorf("pulling images: %w", err)
	}
	return Result{Images: pulled, Plan: p, Notes: found.Notes}, found, nil
}

// requests lists the images to pull, pinned by in.Pins. With in.Locked, an image without a
// pin is an error (*lock.StaleError) before anything is pulled.
func requests(in Inputs, found check.Result) ([]images.Request, error) {
	system, err := images.K3sImages(in.K3sVersion)
	if err != nil {
		return nil, fmt.Errorf("k3s.version: %w", err)
	}
	var reqs []images.Request
	for _, r := range system {
		reqs = append(reqs, images.Request{Ref: r, UsedBy: []string{"images/k3s/" + in.K3sVersion + ".txt"}})
	}
	if in.CertManager {
		v := certManagerVersion(in)
		list, err := images.CertManagerImages(v)
		if err != nil {
			return nil, fmt.Errorf("certManager.version: %w", err)
		}
		for _, r := range list {
			reqs = append(reqs, images.Request{Ref: r, UsedBy: []string{"images/certmanager/" + v + ".txt"}})
		}
	}
	for _, u := range found.Images {
		reqs = append(reqs, images.Request{Ref: u.Ref, UsedBy: []string{u.File}})
	}
	for _, r := range in.Images {
		reqs = append(reqs, images.Request{Ref: r, UsedBy: []string{"spec images"}})
	}
	missing := map[string]bool{}
	for i := range reqs {
		ref, err := images.ParseReference(reqs[i].Ref)
		if err != nil {
			continue // Pull reports it with its users
		}
		if _, byDigest := ref.(name.Digest); byDigest {
			continue
		}
		key := images.Normalize(ref)
		reqs[i].Digest = in.Pins[key]
		if reqs[i].Digest == "" && in.Locked {
			missing[key] = true
		}
	}
	if len(missing) > 0 {
		e := &lock.StaleError{File: in.LockFile}
		for k := range missing {
			e.Missing = append(e.Missing, "image "+k)
		}
		sort.Strings(e.Missing)
		return nil, e
	}
	return reqs, nil
}

// putArchive adds img's archive, streamed from the cache when the tree is written.
func putArchive(t *tree.Tree, img images.Image, epoch time.Time) error {
	cw := &countWriter{}
	if err := images.WriteArchive(cw, img); err != nil {
		return err
	}
	open := func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(images.WriteArchive(pw, img)) }()
		return pr, nil
	}
	return t.Put(&tree.Entry{
		Path: path.Join(ImagesDir, images.ArchiveName(img)), Kind: tree.Regular, Mode: 0o644,
		ModTime: epoch, Size: cw.n, Content: tree.Func(open),
	})
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// putManifests copies each manifest file under a name derived from its path, adds the
// generated ones (cert-manager's), and the generated LimitRanges as edgeimg-limitranges.yaml.
func putManifests(t *tree.Tree, paths []string, extra []certmanager.Manifest, found check.Result, epoch time.Time) error {
	if err := t.MkdirAll(ManifestsDir, epoch); err != nil {
		return err
	}
	files, err := manifestFiles(paths)
	if err != nil {
		return err
	}
	for _, f := range files {
		name := path.Join(ManifestsDir, f[1])
		if t.Get(name) != nil {
			return fmt.Errorf("%s: two manifests map to %s", f[0], name)
		}
		st, err := os.Stat(f[0])
		if err != nil {
			return err
		}
		if err := t.Put(&tree.Entry{Path: name, Kind: tree.Regular, Mode: 0o644, ModTime: epoch, Size: st.Size(), Content: tree.File(f[0])}); err != nil {
			return err
		}
	}
	for _, m := range extra {
		name := path.Join(ManifestsDir, m.Name)
		if t.Get(name) != nil {
			return fmt.Errorf("%s: a manifest of the spec has the name edgeimg gives cert-manager's; rename it", m.Name)
		}
		if err := t.WriteFile(name, m.Data, 0o644, epoch); err != nil {
			return err
		}
	}
	if len(found.Generated) == 0 {
		return nil
	}
	var docs []string
	for _, g := range found.Generated {
		b, err := sigsyaml.Marshal(g.Object)
		if err != nil {
			return err
		}
		docs = append(docs, string(b))
	}
	return t.WriteFile(path.Join(ManifestsDir, "edgeimg-limitranges.yaml"), []byte(strings.Join(docs, "---\n")), 0o644, epoch)
}

// manifestFiles lists the YAML files of paths with their names in ManifestsDir: a file
// keeps its base name, a directory's files their path relative to it ("/" becomes "_").
func manifestFiles(paths []string) ([][2]string, error) {
	var out [][2]string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, [2]string{p, filepath.Base(p)})
			continue
		}
		err = filepath.WalkDir(p, func(f string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !(strings.HasSuffix(f, ".yaml") || strings.HasSuffix(f, ".yml")) {
				return err
			}
			rel, err := filepath.Rel(p, f)
			if err != nil {
				return err
			}
			out = append(out, [2]string{f, strings.ReplaceAll(filepath.ToSlash(rel), "/", "_")})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][1] < out[j][1] })
	return out, nil
}
