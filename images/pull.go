package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Request asks for one image.
type Request struct {
	// Ref is the reference exactly as the manifests (or the spec) write it.
	Ref string
	// Digest optionally pins what Ref resolves to ("sha256:…", from the lock file). With it,
	// and a warm cache, pulling makes no network request.
	Digest string
	// UsedBy names the files that use the image, for error messages.
	UsedBy []string
}

// Image is a pulled image of one platform, backed by the on-disk cache.
type Image struct {
	// Ref is the normalized reference that was requested ("docker.io/library/nginx:1.27").
	Ref string
	// Names are the names the image gets in its air-gap archive: Ref, and the repository
	// pinned by Digest and by ManifestDigest, so references by tag or by digest both
	// resolve without the network.
	Names []string
	// Digest is what Ref resolves to in the registry: an index digest for a multi-platform
	// image. It is what a lock file pins.
	Digest v1.Hash
	// ManifestDigest is the digest of the platform's image manifest.
	ManifestDigest v1.Hash
	// Platform is the platform of the image config.
	Platform v1.Platform
	// UsedBy names the files that use the image.
	UsedBy []string
	// Image is the image itself; its blobs are read from the cache.
	Image v1.Image
}

// Puller pulls images of one platform through registry mirrors into a content-addressed
// cache. It is safe for concurrent use.
type Puller struct {
	cache       *blobCache
	platform    v1.Platform
	mirrors     map[string]*url.URL
	keychain    authn.Keychain
	static      staticKeychain
	transport   http.RoundTripper
	concurrency int
}

// Option configures a Puller.
type Option func(*Puller) error

// WithPlatform sets the platform pulled. Default: linux/arm64.
func WithPlatform(p v1.Platform) Option {
	return func(pl *Puller) error {
		if p.OS == "" || p.Architecture == "" {
			return fmt.Errorf("platform %q: os and architecture are required", p.String())
		}
		pl.platform = p
		return nil
	}
}

// WithMirrors maps registries to mirrors: {"docker.io": "http://127.0.0.1:5000"} pulls every
// docker.io image from the mirror while the image keeps its docker.io name. A mirror URL
// may carry a path prefix for the repositories. Default: no mirrors.
func WithMirrors(m map[string]string) Option {
	return func(p *Puller) error {
		for reg, raw := range m {
			u, err := url.Parse(raw)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
				return fmt.Errorf("registries.mirrors[%s]: %q is not an http(s)://host[:port][/prefix] URL", reg, raw)
			}
			p.mirrors[registryName(reg)] = u
		}
		return nil
	}
}

// WithAuth sets credentials per registry host ("ghcr.io", a mirror's "host:port"); they are
// tried before the keychain. Default: none.
func WithAuth(auth map[string]authn.AuthConfig) Option {
	return func(p *Puller) error {
		for k, v := range auth {
			p.static[registryName(k)] = v
		}
		return nil
	}
}

// WithKeychain sets the keychain consulted after WithAuth's credentials.
// Default: authn.DefaultKeychain (the docker config).
func WithKeychain(k authn.Keychain) Option {
	return func(p *Puller) error { p.keychain = k; return nil }
}

// WithTransport sets the HTTP transport. Default: remote.DefaultTransport.
func WithTransport(t http.RoundTripper) Option {
	return func(p *Puller) error { p.transport = t; return nil }
}

// WithConcurrency bounds the number of images pulled at once. Default: 4.
func WithConcurrency(n int) Option {
	return func(p *Puller) error {
		if n < 1 {
			return fmt.Errorf("concurrency %d: must be at least 1", n)
		}
		p.concurrency = n
		return nil
	}
}

// NewPuller returns a Puller caching blobs under cacheDir.
func NewPuller(cacheDir string, opts ...Option) (*Puller, error) {
	c, err := newBlobCache(cacheDir)
	if err != nil {
		return nil, err
	}
	p := &Puller{
		cache:       c,
		platform:    v1.Platform{OS: "linux", Architecture: "arm64"},
		mirrors:     map[string]*url.URL{},
		keychain:    authn.DefaultKeychain,
		static:      staticKeychain{},
		transport:   remote.DefaultTransport,
		concurrency: 4,
	}
	for _, o := range opts {
		if err := o(p); err != nil {
			return nil, err
		}
	}
	if len(p.static) > 0 {
		p.keychain = authn.NewMultiKeychain(p.static, p.keychain)
	}
	return p, nil
}

type staticKeychain map[string]authn.AuthConfig

func (s staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if c, ok := s[registryName(r.RegistryStr())]; ok {
		return authn.FromConfig(c), nil
	}
	// Anonymous lets the multi-keychain fall through to the next keychain.
	return authn.Anonymous, nil
}

// Pull pulls every requested image for the Puller's platform, at most WithConcurrency at a
// time. Requests for the same normalized reference are merged. The images are returned
// sorted by Ref; all failures are reported together, each naming the image and its users.
func (p *Puller) Pull(ctx context.Context, reqs []Request) ([]Image, error) {
	merged := map[string]*Request{}
	for _, r := range reqs {
		ref, err := ParseReference(r.Ref)
		if err != nil {
			return nil, fmt.Errorf("%w%s", err, usedBy(r.UsedBy))
		}
		key := Normalize(ref)
		m, ok := merged[key]
		if !ok {
			c := r
			c.UsedBy = append([]string(nil), r.UsedBy...)
			merged[key] = &c
			continue
		}
		if r.Digest != "" && m.Digest != "" && r.Digest != m.Digest {
			return nil, fmt.Errorf("image %s: pinned to both %s and %s", key, m.Digest, r.Digest)
		}
		if m.Digest == "" {
			m.Digest = r.Digest
		}
		m.UsedBy = append(m.UsedBy, r.UsedBy...)
	}
	keys := make([]string, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	out := make([]Image, len(keys))
	errs := make([]error, len(keys))
	sem := make(chan struct{}, p.concurrency)
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			out[i], errs[i] = p.pullOne(ctx, *merged[k])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func usedBy(files []string) string {
	if len(files) == 0 {
		return ""
	}
	f := append([]string(nil), files...)
	sort.Strings(f)
	f = compact(f)
	return " (used by " + strings.Join(f, ", ") + ")"
}

func compact(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// source returns where ref is pulled from: its mirror's repository or its own.
func (p *Puller) source(ref name.Reference) (name.Repository, error) {
	repo := ref.Context()
	u, ok := p.mirrors[registryName(repo.RegistryStr())]
	if !ok {
		return repo, nil
	}
	var opts []name.Option
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	path := repo.RepositoryStr()
	if prefix := strings.Trim(u.Path, "/"); prefix != "" {
		path = prefix + "/" + path
	}
	return name.NewRepository(u.Host+"/"+path, opts...)
}

func (p *Puller) pullOne(ctx context.Context, r Request) (img Image, err error) {
	ref, _ := ParseReference(r.Ref)
	norm := Normalize(ref)
	defer func() {
		if err != nil {
			err = fmt.Errorf("pulling %s%s: %w", norm, usedBy(r.UsedBy), err)
		}
	}()
	src, err := p.source(ref)
	if err != nil {
		return Image{}, err
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(p.transport),
		remote.WithAuthFromKeychain(p.keychain),
	}

	pin := r.Digest
	if d, ok := ref.(name.Digest); ok {
		if pin != "" && pin != d.DigestStr() {
			return Image{}, fmt.Errorf("reference digest %s differs from the pinned %s", d.DigestStr(), pin)
		}
		pin = d.DigestStr()
	}

	// 1. The top-level manifest: by digest from the cache, or resolved by tag.
	var top v1.Hash
	if pin != "" {
		if top, err = v1.NewHash(pin); err != nil {
			return Image{}, fmt.Errorf("pinned digest: %w", err)
		}
		if err := p.fetchManifest(src, top, ropts); err != nil {
			return Image{}, err
		}
	} else {
		desc, err := remote.Get(src.Tag(ref.Identifier()), ropts...)
		if err != nil {
			return Image{}, err
		}
		top = desc.Digest
		if err := p.cache.ensure(top, func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(desc.Manifest)), nil
		}); err != nil {
			return Image{}, err
		}
	}
	raw, err := p.cache.read(top)
	if err != nil {
		return Image{}, err
	}

	// 2. The platform's image manifest.
	mdig := top
	if isIndex(raw) {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return Image{}, fmt.Errorf("index %s: %w", top, err)
		}
		child, have := p.pick(idx)
		if child == nil {
			return Image{}, fmt.Errorf("no %s variant (the index has %s)", p.platform.String(), strings.Join(have, ", "))
		}
		mdig = child.Digest
		if err := p.fetchManifest(src, mdig, ropts); err != nil {
			return Image{}, err
		}
		if raw, err = p.cache.read(mdig); err != nil {
			return Image{}, err
		}
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return Image{}, fmt.Errorf("manifest %s: %w", mdig, err)
	}
	if m.MediaType == types.DockerManifestSchema1 || m.MediaType == types.DockerManifestSchema1Signed {
		return Image{}, fmt.Errorf("manifest %s: docker schema 1 is not supported", mdig)
	}

	// 3. Config, checked against the platform, then the layers.
	if err := p.fetchBlob(src, m.Config.Digest, ropts); err != nil {
		return Image{}, fmt.Errorf("config: %w", err)
	}
	rawCfg, err := p.cache.read(m.Config.Digest)
	if err != nil {
		return Image{}, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return Image{}, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	got := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	if !platformMatches(p.platform, got) {
		return Image{}, fmt.Errorf("no %s variant (the image is %s)", p.platform.String(), got.String())
	}
	for _, l := range m.Layers {
		if err := p.fetchBlob(src, l.Digest, ropts); err != nil {
			return Image{}, fmt.Errorf("layer: %w", err)
		}
	}

	vimg, err := partial.CompressedToImage(&cachedImage{cache: p.cache, manifest: raw, config: rawCfg, m: m})
	if err != nil {
		return Image{}, err
	}
	repo := RepoName(ref.Context())
	names := []string{norm}
	for _, d := range []v1.Hash{top, mdig} {
		n := repo + "@" + d.String()
		if n != names[len(names)-1] && n != names[0] {
			names = append(names, n)
		}
	}
	files := append([]string(nil), r.UsedBy...)
	sort.Strings(files)
	return Image{
		Ref: norm, Names: names, Digest: top, ManifestDigest: mdig, Platform: got,
		UsedBy: compact(files), Image: vimg,
	}, nil
}

func (p *Puller) fetchManifest(src name.Repository, h v1.Hash, ropts []remote.Option) error {
	return p.cache.ensure(h, func() (io.ReadCloser, error) {
		desc, err := remote.Get(src.Digest(h.String()), ropts...)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(desc.Manifest)), nil
	})
}

func (p *Puller) fetchBlob(src name.Repository, h v1.Hash, ropts []remote.Option) error {
	return p.cache.ensure(h, func() (io.ReadCloser, error) {
		l, err := remote.Layer(src.Digest(h.String()), ropts...)
		if err != nil {
			return nil, err
		}
		return l.Compressed()
	})
}

// pick returns the index entry for the Puller's platform, or nil and the platforms present.
func (p *Puller) pick(idx *v1.IndexManifest) (*v1.Descriptor, []string) {
	var have []string
	for i, d := range idx.Manifests {
		if d.Platform == nil {
			continue
		}
		if platformMatches(p.platform, *d.Platform) {
			return &idx.Manifests[i], nil
		}
		if d.Platform.OS != "unknown" { // attestation manifests
			have = append(have, d.Platform.String())
		}
	}
	sort.Strings(have)
	return nil, compact(have)
}

// platformMatches reports whether got satisfies want; arm64's variant v8 is its default.
func platformMatches(want, got v1.Platform) bool {
	if want.OS != got.OS || want.Architecture != got.Architecture {
		return false
	}
	norm := func(p v1.Platform) string {
		if p.Architecture == "arm64" && p.Variant == "v8" {
			return ""
		}
		return p.Variant
	}
	return want.Variant == "" || norm(want) == norm(got)
}

func isIndex(raw []byte) bool {
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(raw, &probe) != nil {
		return false
	}
	if probe.MediaType != "" {
		return probe.MediaType.IsIndex()
	}
	return probe.Manifests != nil
}

// cachedImage is a v1.Image whose blobs are files in the cache.
type cachedImage struct {
	cache    *blobCache
	manifest []byte
	config   []byte
	m        *v1.Manifest
}

func (i *cachedImage) RawConfigFile() ([]byte, error) { return i.config, nil }
func (i *cachedImage) RawManifest() ([]byte, error)   { return i.manifest, nil }
func (i *cachedImage) MediaType() (types.MediaType, error) {
	if i.m.MediaType != "" {
		return i.m.MediaType, nil
	}
	return types.OCIManifestSchema1, nil
}

func (i *cachedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.m.Config.Digest {
		return &cachedBlob{cache: i.cache, desc: i.m.Config}, nil
	}
	for _, l := range i.m.Layers {
		if l.Digest == h {
			return &cachedBlob{cache: i.cache, desc: l}, nil
		}
	}
	return nil, fmt.Errorf("blob %s is not in the manifest", h)
}

type cachedBlob struct {
	cache *blobCache
	desc  v1.Descriptor
}

func (b *cachedBlob) Digest() (v1.Hash, error)            { return b.desc.Digest, nil }
func (b *cachedBlob) Size() (int64, error)                { return b.desc.Size, nil }
func (b *cachedBlob) MediaType() (types.MediaType, error) { return b.desc.MediaType, nil }
func (b *cachedBlob) Compressed() (io.ReadCloser, error)  { return os.Open(b.cache.path(b.desc.Digest)) }
