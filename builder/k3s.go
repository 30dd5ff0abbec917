package builder

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/edgeimg/edgeimg/builder/fetch"
	"github.com/edgeimg/edgeimg/builder/lock"
	"github.com/edgeimg/edgeimg/builder/payload"
	"github.com/edgeimg/edgeimg/builder/sbom"
	"github.com/edgeimg/edgeimg/builder/spec"
	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/images"
	"github.com/edgeimg/edgeimg/manifests/plan"
	"github.com/google/go-containerregistry/pkg/authn"
	"gopkg.in/yaml.v3"
)

// Where the K3s stage puts things in the system slot.
const (
	K3sBinaryPath     = "usr/local/bin/k3s"
	K3sConfigPath     = "etc/rancher/k3s/config.yaml"
	K3sRegistriesPath = "etc/rancher/k3s/registries.yaml"
	K3sInfoPath       = "usr/lib/edgeimg/k3s.json"
	K3sPrepareScript  = "usr/lib/edgeimg/k3s-prepare"
	K3sPruneScript    = "usr/lib/edgeimg/k3s-prune"
	unitDir           = "etc/systemd/system"
)

// K3sLinks are the commands the K3s installer links to the k3s multi-call binary.
var K3sLinks = []string{"kubectl", "crictl", "ctr"}

// WithLock pins the build to a lock file's digests: file names it in errors. An image or
// download the lock does not pin makes the build fail (*lock.StaleError) unless
// WithUpdateLock. Default: no lock, every tag is resolved in its registry.
func WithLock(l *lock.Lock, file string) Option {
	return func(o *options) { o.lock, o.lockFile = l, file }
}

// WithUpdateLock resolves what the lock of WithLock does not pin instead of failing; what it
// pins stays pinned. Result.Lock then holds the updated lock. Default: off.
func WithUpdateLock() Option { return func(o *options) { o.updateLock = true } }

// k3sBinary is the fetched k3s executable.
type k3sBinary struct {
	URL    string
	Path   string
	SHA256 string
	Size   int64
}

// k3sStage is what the K3s stage produced: the files to lay into the root filesystem (before
// the overlays), and what the report, the SBOM and the lock record.
type k3sStage struct {
	Version string
	Role    string
	Binary  k3sBinary
	Payload payload.Result
	// Tree holds the payload: binary, units, config, scripts, image archives, manifests.
	Tree *tree.Tree
}

// buildK3s runs the K3s stage, or returns nil when the spec has no k3s section. It needs
// nothing from the base image, so bad manifests or images fail the build early:
//  1. fetch the k3s executable, checked against its pinned or published sha256;
//  2. check the manifests, make the memory plan, pull every image (payload.Assemble);
//  3. add the executable, its units, config and the boot-time scripts.
func buildK3s(ctx context.Context, s *spec.Spec, o *options) (*k3sStage, error) {
	if s.K3s == nil {
		return nil, nil
	}
	cacheDir := o.cacheDir
	if cacheDir == "" {
		var err error
		if cacheDir, err = fetch.DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	locked := o.lock != nil && !o.updateLock

	// 1.
	bin, err := fetchK3s(ctx, s.K3s.Binary, o.lock, locked, o.lockFile, &fetch.Cache{Dir: cacheDir}, fetchOptions(o))
	if err != nil {
		return nil, fmt.Errorf("k3s.binary: %w", err)
	}

	// 2.
	in, err := payloadInputs(s, o.lock, cacheDir)
	if err != nil {
		return nil, err
	}
	in.Locked, in.LockFile = locked, o.lockFile
	t := tree.New()
	res, err := payload.Assemble(ctx, in, t)
	if err != nil {
		return nil, err
	}
	st := &k3sStage{Version: s.K3s.Version, Role: s.K3s.Role, Binary: bin, Payload: res, Tree: t}

	// 3.
	if err := installK3s(t, st, s); err != nil {
		return nil, fmt.Errorf("k3s: %w", err)
	}
	return st, nil
}

func fetchOptions(o *options) []fetch.Option {
	fopts := []fetch.Option{fetch.WithProgress(o.progress), fetch.WithLogger(o.logger), fetch.WithVersion(o.version)}
	if o.client != nil {
		fopts = append(fopts, fetch.WithClient(o.client))
	}
	return fopts
}

// payloadInputs turns the spec into the payload stage's inputs.
func payloadInputs(s *spec.Spec, pins *lock.Lock, cacheDir string) (payload.Inputs, error) {
	board, err := planBoard(s)
	if err != nil {
		return payload.Inputs{}, err
	}
	auth := map[string]authn.AuthConfig{}
	for host, a := range s.Registries.Auth {
		auth[host] = authn.AuthConfig{Username: a.Username, Password: a.Password, Auth: a.Auth, IdentityToken: a.IdentityToken}
	}
	in := payload.Inputs{
		K3sVersion: s.K3s.Version, Manifests: s.ManifestPaths(), Images: s.Images,
		Mirrors: s.Registries.Mirrors, Auth: auth, CacheDir: filepath.Join(cacheDir, "images"),
		Board: board, AllowOvercommit: s.Plan.AllowOvercommit, Role: s.K3s.Role,
		CertManager: s.CertManager.Enabled != nil && *s.CertManager.Enabled, CertManagerVersion: s.CertManager.Version,
	}
	if pins != nil {
		in.Pins = pins.Images
	}
	return in, nil
}

// planBoard returns the board variant of hardware.ram.
func planBoard(s *spec.Spec) (plan.Board, error) {
	ram := s.Hardware.RAM
	if ram == 0 {
		ram = spec.DefaultRAM
	}
	switch s.Board {
	case "rpi4":
		if ram%spec.GiB != 0 {
			return plan.Board{}, fmt.Errorf("hardware.ram: %s is not a variant of rpi4", ram)
		}
		return plan.RPi4(int(ram / spec.GiB))
	}
	return plan.Board{}, fmt.Errorf("hardware: no memory plan for board %q", s.Board)
}

// Plan returns the memory plan of the spec's K3s payload (`edgeimg plan`): OS, K3s, the agent
// and every workload at its HPA's minimum and maximum replicas, against hardware.ram. It reads
// the manifests only; nothing is pulled. Use plan.Check to see whether it fits.
func Plan(s *spec.Spec) (plan.Plan, error) {
	if s.K3s == nil {
		return plan.Plan{}, errors.New("the spec has no k3s section: the image runs no K3s, so there is no memory plan")
	}
	in, err := payloadInputs(s, nil, "")
	if err != nil {
		return plan.Plan{}, err
	}
	return payload.Plan(in)
}

// Lock resolves everything the spec names by tag or URL, afresh (`edgeimg lock`): the k3s
// executable (downloaded and checked) and every image of the payload (pulled into the cache
// for linux/arm64, which also checks that each has that variant). It writes no image.
func Lock(ctx context.Context, s *spec.Spec, opts ...Option) (*lock.Lock, error) {
	o := makeOptions(opts)
	l := lock.New()
	if isHTTP(s.Base.Image) && s.Base.SHA256 != "" {
		l.Downloads[s.Base.Image] = s.Base.SHA256
	}
	if s.K3s == nil {
		return l, nil
	}
	cacheDir := o.cacheDir
	if cacheDir == "" {
		var err error
		if cacheDir, err = fetch.DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	bin, err := fetchK3s(ctx, s.K3s.Binary, nil, false, "", &fetch.Cache{Dir: cacheDir}, fetchOptions(o))
	if err != nil {
		return nil, fmt.Errorf("k3s.binary: %w", err)
	}
	in, err := payloadInputs(s, nil, cacheDir)
	if err != nil {
		return nil, err
	}
	res, err := payload.Resolve(ctx, in)
	if err != nil {
		return nil, err
	}
	(&k3sStage{Binary: bin, Payload: res}).addToLock(l)
	return l, nil
}

// buildLock is the lock of a build: the base's URL and the K3s stage's pins.
func buildLock(s *spec.Spec, src *baseSource, st *k3sStage) *lock.Lock {
	l := lock.New()
	if isHTTP(src.Name) {
		l.Downloads[src.Name] = src.SourceSHA256
	}
	st.addToLock(l)
	return l
}

func isHTTP(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

func (st *k3sStage) addToLock(l *lock.Lock) {
	if st == nil {
		return
	}
	l.Downloads[st.Binary.URL] = st.Binary.SHA256
	for _, img := range st.Payload.Images {
		if !strings.Contains(img.Ref, "@") { // references by digest pin themselves
			l.Images[img.Ref] = img.Digest.String()
		}
	}
}

// fetchK3s brings the k3s executable into the cache. Its sha256 is, in order: the spec's
// binary.sha256, the lock's entry for the URL, or (unless locked) the line for the URL's file
// in the sha256sum-arm64.txt beside it. The file must be a 64-bit ARM ELF executable.
func fetchK3s(ctx context.Context, b spec.K3sBinary, pins *lock.Lock, locked bool, lockFile string, c *fetch.Cache, fopts []fetch.Option) (k3sBinary, error) {
	sum := b.SHA256
	if sum == "" && pins != nil {
		sum = pins.Downloads[b.URL]
	}
	if sum == "" && locked {
		return k3sBinary{}, &lock.StaleError{File: lockFile, Missing: []string{"download " + b.URL}}
	}
	if sum == "" {
		var err error
		if sum, err = publishedSHA256(ctx, b.URL, c, fopts); err != nil {
			return k3sBinary{}, err
		}
	}
	p, err := c.Download(ctx, b.URL, sum, fopts...)
	if err != nil {
		return k3sBinary{}, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return k3sBinary{}, err
	}
	if err := checkARM64(p); err != nil {
		return k3sBinary{}, fmt.Errorf("%s: %w", b.URL, err)
	}
	return k3sBinary{URL: b.URL, Path: p, SHA256: sum, Size: st.Size()}, nil
}

// publishedSHA256 downloads the sha256sum-arm64.txt beside binURL and returns the sha256 of
// the binary's file name in it.
func publishedSHA256(ctx context.Context, binURL string, c *fetch.Cache, fopts []fetch.Option) (string, error) {
	u, err := url.Parse(binURL)
	if err != nil {
		return "", err
	}
	name := path.Base(u.Path)
	sums := *u
	sums.Path = path.Join(path.Dir(u.Path), spec.K3sChecksums)
	sums.RawPath = ""
	p, err := c.Download(ctx, sums.String(), "", fopts...)
	if err != nil {
		return "", fmt.Errorf("checksums of %s: %w", name, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sum, err := parseSHA256Sums(io.LimitReader(f, 1<<20), name)
	if err != nil {
		return "", fmt.Errorf("%s: %w (or set k3s.binary.sha256)", sums.String(), err)
	}
	return sum, nil
}

// parseSHA256Sums finds name in sha256sum output ("HEX  NAME" or "HEX *NAME" per line).
func parseSHA256Sums(r io.Reader, name string) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || strings.TrimPrefix(f[1], "*") != name {
			continue
		}
		sum := strings.ToLower(f[0])
		if len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
			return "", fmt.Errorf("the line for %s has %q, not a sha256", name, f[0])
		}
		return sum, nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no line for %s", name)
}

// checkARM64 checks that p is a 64-bit little-endian ARM ELF file.
func checkARM64(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_AARCH64 {
		return fmt.Errorf("not a linux/arm64 executable (ELF %v %v)", f.Class, f.Machine)
	}
	return nil
}

// installK3s adds the executable, the units, the config and the scripts to the stage's tree.
// Times are set when the tree is merged into the root (mergeK3s).
func installK3s(t *tree.Tree, st *k3sStage, s *spec.Spec) error {
	var epoch time.Time
	if err := t.Put(&tree.Entry{Path: K3sBinaryPath, Kind: tree.Regular, Mode: 0o755, ModTime: epoch,
		Size: st.Binary.Size, Content: tree.File(st.Binary.Path)}); err != nil {
		return err
	}
	files := []struct {
		path string
		mode uint32
		text string
	}{
		{unitDir + "/k3s.service", 0o644, K3sServerUnit},
		{unitDir + "/k3s-agent.service", 0o644, K3sAgentUnit},
		{unitDir + "/edgeimg-k3s-prepare.service", 0o644, K3sPrepareUnit},
		{unitDir + "/edgeimg-k3s-prune.service", 0o644, K3sPruneUnit},
		{K3sPrepareScript, 0o755, K3sPrepareSh},
		{K3sPruneScript, 0o755, K3sPruneSh},
	}
	for _, f := range files {
		if err := t.WriteFile(f.path, []byte(f.text), f.mode, epoch); err != nil {
			return err
		}
	}
	// The boot-time scripts are enabled as systemctl enable would; K3s's own units are not:
	// edgeimg-agent starts the role's unit.
	for _, l := range [][2]string{
		{"/etc/systemd/system/edgeimg-k3s-prepare.service", unitDir + "/k3s.service.requires/edgeimg-k3s-prepare.service"},
		{"/etc/systemd/system/edgeimg-k3s-prepare.service", unitDir + "/k3s-agent.service.requires/edgeimg-k3s-prepare.service"},
		{"/etc/systemd/system/edgeimg-k3s-prune.service", unitDir + "/k3s.service.wants/edgeimg-k3s-prune.service"},
	} {
		if err := t.Symlink(l[0], l[1], epoch); err != nil {
			return err
		}
	}
	cfg, err := K3sConfig(s.K3s.Config)
	if err != nil {
		return err
	}
	if err := t.WriteFile(K3sConfigPath, cfg, 0o600, epoch); err != nil {
		return err
	}
	if s.Registries.WriteRegistriesYaml {
		if err := t.WriteFile(K3sRegistriesPath, K3sRegistries(s.Registries.Mirrors), 0o600, epoch); err != nil {
			return err
		}
	}
	info, _ := json.MarshalIndent(map[string]string{"version": st.Version, "role": st.Role, "sha256": st.Binary.SHA256}, "", "  ")
	return t.WriteFile(K3sInfoPath, append(info, '\n'), 0o644, epoch)
}

// K3sConfig returns /etc/rancher/k3s/config.yaml: the base config (the kubeconfig on the data
// partition, readable by root only) with the spec's k3s.config merged over it, keys sorted.
func K3sConfig(extra map[string]any) ([]byte, error) {
	m := map[string]any{
		"write-kubeconfig":      "/var/lib/rancher/k3s/k3s.yaml",
		"write-kubeconfig-mode": "0600",
	}
	for k, v := range extra {
		m[k] = v
	}
	b, err := yaml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("k3s.config: %w", err)
	}
	head := "# Written by edgeimg: the base K3s config (k3s.config of the spec merged in). K3s reads\n" +
		"# config.yaml.d/*.yaml after it: a symlink to the data partition, where edgeimg-agent\n" +
		"# writes the role the fleet assigns.\n"
	return append([]byte(head), b...), nil
}

// K3sRegistries returns /etc/rancher/k3s/registries.yaml with the spec's mirrors (never its
// credentials).
func K3sRegistries(mirrors map[string]string) []byte {
	hosts := make([]string, 0, len(mirrors))
	for h := range mirrors {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	var b bytes.Buffer
	b.WriteString("# Written by edgeimg from registries.mirrors of the spec (credentials are not written).\nmirrors:\n")
	for _, h := range hosts {
		fmt.Fprintf(&b, "  %q:\n    endpoint:\n      - %q\n", h, mirrors[h])
	}
	return b.Bytes()
}

// mergeK3s lays the stage's tree into the root filesystem, every time set to epoch:
// directories the root has keep their metadata; the kubectl, crictl and ctr links are made unless the base has those
// commands (as the installer does). It returns the paths added.
func mergeK3s(root *tree.Tree, st *k3sStage, epoch time.Time) ([]string, error) {
	if st == nil {
		return nil, nil
	}
	var added []string
	err := st.Tree.Walk(func(e *tree.Entry) error {
		if e.Path == "" {
			return nil
		}
		if e.Kind == tree.Dir && root.Get(e.Path) != nil {
			return nil
		}
		c := *e
		c.ModTime = epoch
		if err := root.Put(&c); err != nil {
			return err
		}
		if e.Kind != tree.Dir {
			added = append(added, "/"+e.Path)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, cmd := range K3sLinks {
		p := path.Join(path.Dir(K3sBinaryPath), cmd)
		if root.Get(p) != nil || root.Get("usr/bin/"+cmd) != nil {
			continue
		}
		if err := root.Symlink("k3s", p, epoch); err != nil {
			return nil, err
		}
		added = append(added, "/"+p)
	}
	return added, nil
}

// K3sReport is the K3s part of the build report.
type K3sReport struct {
	Version string `json:"version"`
	Role    string `json:"role"`
	// Binary is the k3s executable: its URL and sha256.
	Binary Input `json:"binary"`
	// Images are the shipped images, sorted by reference.
	Images []ReportImage `json:"images"`
	// Plan is the memory plan.
	Plan plan.Plan `json:"plan"`
	// Notes say what the manifest checks generated.
	Notes []string `json:"notes,omitempty"`
}

// ReportImage is one shipped image.
type ReportImage struct {
	Ref string `json:"ref"`
	// Digest is what the reference resolved to (the lock's pin); ManifestDigest the linux/arm64
	// image manifest in the archive.
	Digest         string   `json:"digest"`
	ManifestDigest string   `json:"manifestDigest"`
	Platform       string   `json:"platform"`
	Archive        string   `json:"archive"`
	UsedBy         []string `json:"usedBy,omitempty"`
}

// report returns the K3s part of the report, nil without K3s.
func (st *k3sStage) report() *K3sReport {
	if st == nil {
		return nil
	}
	r := &K3sReport{Version: st.Version, Role: st.Role, Plan: st.Payload.Plan, Notes: st.Payload.Notes,
		Binary: Input{Kind: "k3s", Name: st.Binary.URL, SHA256: st.Binary.SHA256}, Images: []ReportImage{}}
	for _, img := range st.Payload.Images {
		r.Images = append(r.Images, ReportImage{
			Ref: img.Ref, Digest: img.Digest.String(), ManifestDigest: img.ManifestDigest.String(),
			Platform: img.Platform.String(), Archive: "/" + path.Join(payload.ImagesDir, images.ArchiveName(img)), UsedBy: img.UsedBy,
		})
	}
	return r
}

// sbomComponents lists k3s and every shipped image for the SBOM; nil without K3s. An image's
// SHA256 is its linux/arm64 manifest digest, its purl pins the digest the reference resolved to.
func (st *k3sStage) sbomComponents() []sbom.Component {
	if st == nil {
		return nil
	}
	out := []sbom.Component{{
		Name: "k3s", Version: st.Version, SHA256: st.Binary.SHA256,
		PURL:     "pkg:github/k3s-io/k3s@" + url.PathEscape(st.Version),
		Supplier: "Organization: K3s project (CNCF)",
	}}
	for _, img := range st.Payload.Images {
		repo, tag := img.Ref, ""
		if i := strings.LastIndex(img.Ref, "@"); i >= 0 {
			repo = img.Ref[:i]
		} else if i := strings.LastIndex(img.Ref, ":"); i > strings.LastIndex(img.Ref, "/") {
			repo, tag = img.Ref[:i], img.Ref[i+1:]
		}
		q := url.Values{"arch": {img.Platform.Architecture}, "repository_url": {repo}}
		if tag != "" {
			q.Set("tag", tag)
		}
		out = append(out, sbom.Component{
			Name: repo, Version: or(tag, img.Digest.String()), SHA256: img.ManifestDigest.Hex,
			PURL: "pkg:oci/" + path.Base(repo) + "@" + url.PathEscape(img.Digest.String()) + "?" + q.Encode(),
		})
	}
	return out
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
