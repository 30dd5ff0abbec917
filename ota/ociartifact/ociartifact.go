package ociartifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgeimg/edgeimg/builder/output"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// Media types of the artifact.
const (
	// ArtifactType is the manifest's artifactType.
	ArtifactType = "application/vnd.edgeimg.update.v1"
	// BundleMediaType is the media type of the one layer, the bundle file.
	BundleMediaType types.MediaType = "application/vnd.edgeimg.update.bundle.v1.tar"
)

// Annotations of the manifest.
const (
	AnnotationVersion = "org.opencontainers.image.version" // the release version
	AnnotationTitle   = "org.opencontainers.image.title"   // the bundle's file name
	AnnotationBoard   = "io.edgeimg.board"
	AnnotationName    = "io.edgeimg.name"
)

// emptyConfig is the OCI empty descriptor's content.
var emptyConfig = []byte("{}")

// Info describes a pushed or pulled artifact.
type Info struct {
	// Digest is the manifest's digest: pin it (REPO@sha256:…) to pull exactly this release.
	Digest v1.Hash
	// Bundle is the layer: the bundle file's digest and size.
	Bundle v1.Descriptor
	// Annotations are the manifest's annotations (AnnotationVersion, …).
	Annotations map[string]string
}

// Push uploads the bundle at bundlePath to ref as an artifact. The bundle's manifest is read
// WITHOUT verifying its signature, only to annotate the artifact (version, name, board):
// devices verify the bundle itself. The file is read twice (to hash, then to upload), never
// held in memory. opts are passed to remote.Write (auth, transport); ctx bounds it.
func Push(ctx context.Context, ref name.Reference, bundlePath string, opts ...remote.Option) (*Info, error) {
	core, info, err := artifact(bundlePath)
	if err != nil {
		return nil, err
	}
	img, err := partial.CompressedToImage(core)
	if err != nil {
		return nil, err
	}
	if err := remote.Write(ref, img, append([]remote.Option{remote.WithContext(ctx)}, opts...)...); err != nil {
		return nil, fmt.Errorf("pushing %s to %s: %w", bundlePath, ref, err)
	}
	return info, nil
}

// artifact makes the image core of a bundle file.
func artifact(bundlePath string) (*artifactImage, *Info, error) {
	f, err := os.Open(bundlePath)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	m, _, err := bundle.PeekManifest(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: not an update bundle: %w", bundlePath, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", bundlePath, err)
	}
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return nil, nil, fmt.Errorf("hashing %s: %w", bundlePath, err)
	}
	layer := &fileLayer{path: bundlePath, size: size, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}
	cfg := static.NewLayer(emptyConfig, types.OCIEmptyJSON)
	cfgDigest, _ := cfg.Digest()
	anns := map[string]string{
		AnnotationVersion: m.Version,
		AnnotationTitle:   filepath.Base(bundlePath),
		AnnotationBoard:   m.Board,
		AnnotationName:    m.Name,
	}
	man := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  ArtifactType,
		Config:        v1.Descriptor{MediaType: types.OCIEmptyJSON, Size: int64(len(emptyConfig)), Digest: cfgDigest, Data: emptyConfig},
		Layers: []v1.Descriptor{{MediaType: BundleMediaType, Size: size, Digest: layer.digest,
			Annotations: map[string]string{AnnotationTitle: filepath.Base(bundlePath)}}},
		Annotations: anns,
	}
	raw, err := json.Marshal(man)
	if err != nil {
		return nil, nil, err
	}
	d, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, err
	}
	return &artifactImage{manifest: raw, config: cfg, layer: layer}, &Info{Digest: d, Bundle: man.Layers[0], Annotations: anns}, nil
}

// artifactImage is the artifact as a partial.CompressedImageCore.
type artifactImage struct {
	manifest []byte
	config   v1.Layer
	layer    *fileLayer
}

func (a *artifactImage) RawConfigFile() ([]byte, error)      { return emptyConfig, nil }
func (a *artifactImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (a *artifactImage) RawManifest() ([]byte, error)        { return a.manifest, nil }

func (a *artifactImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == a.layer.digest {
		return a.layer, nil
	}
	if d, _ := a.config.Digest(); h == d {
		return a.config, nil
	}
	return nil, fmt.Errorf("artifact has no blob %s", h)
}

// fileLayer is a layer whose bytes are a file, opened each time they are read; its digest
// and size are computed once beforehand.
type fileLayer struct {
	path   string
	size   int64
	digest v1.Hash
}

var _ v1.Layer = (*fileLayer)(nil)

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return BundleMediaType, nil }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }

// Pull downloads the artifact at ref into outPath: it checks the manifest is an edgeimg
// update artifact (artifactType and layer media type), streams the layer into a temporary
// file beside outPath, checks its size and digest and that it starts like a bundle, then
// renames it into place. On any error outPath is untouched and nothing is left behind.
func Pull(ctx context.Context, ref name.Reference, outPath string, opts ...remote.Option) (*Info, error) {
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", ref, err)
	}
	if desc.MediaType != types.OCIManifestSchema1 {
		return nil, fmt.Errorf("%s is a %s, not an edgeimg update artifact (an OCI image manifest)", ref, desc.MediaType)
	}
	man, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", ref, err)
	}
	if man.ArtifactType != ArtifactType {
		return nil, fmt.Errorf("%s has artifact type %q, not an edgeimg update (%s)", ref, man.ArtifactType, ArtifactType)
	}
	if len(man.Layers) != 1 {
		return nil, fmt.Errorf("%s: the manifest has %d layers, an edgeimg update has one", ref, len(man.Layers))
	}
	if mt := man.Layers[0].MediaType; mt != BundleMediaType {
		return nil, fmt.Errorf("%s: the layer is a %s, not an edgeimg update bundle (%s)", ref, mt, BundleMediaType)
	}
	want := man.Layers[0]
	if want.Size <= 0 || want.Size > bundleMaxBytes {
		return nil, fmt.Errorf("%s: bundle layer of %d bytes out of range", ref, want.Size)
	}
	layer, err := remote.Layer(ref.Context().Digest(want.Digest.String()), opts...)
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", ref, err)
	}
	_, err = output.AtomicWrite(outPath, func(w io.Writer) error {
		rc, err := layer.Compressed()
		if err != nil {
			return err
		}
		defer rc.Close()
		h := sha256.New()
		src := io.LimitReader(rc, want.Size+1)
		// The head holds manifest.json and manifest.sig: check it is a bundle before
		// writing the rest.
		head := make([]byte, min(want.Size, headBytes))
		if _, err := io.ReadFull(src, head); err != nil {
			return fmt.Errorf("the bundle blob ends early: %w", err)
		}
		if _, _, err := bundle.PeekManifest(bytes.NewReader(head)); err != nil {
			return fmt.Errorf("the blob is not an update bundle: %w", err)
		}
		mw := io.MultiWriter(w, h)
		if _, err := mw.Write(head); err != nil {
			return err
		}
		n, err := io.Copy(mw, src)
		if err != nil {
			return err
		}
		if n += int64(len(head)); n != want.Size {
			return fmt.Errorf("the bundle blob is %d bytes, the manifest says %d", n, want.Size)
		}
		if got := hex.EncodeToString(h.Sum(nil)); want.Digest.Algorithm != "sha256" || got != want.Digest.Hex {
			return fmt.Errorf("the bundle blob has digest sha256:%s, the manifest says %s", got, want.Digest)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pulling %s to %s: %w", ref, outPath, err)
	}
	return &Info{Digest: desc.Digest, Bundle: want, Annotations: man.Annotations}, nil
}

// bundleMaxBytes bounds a pulled bundle (the fleet server's limit, api.MaxBundleBytes).
const bundleMaxBytes = 64 << 30

// headBytes covers a bundle's manifest.json and manifest.sig with their tar headers.
const headBytes = 512 + bundle.MaxManifestSize + 512 + bundle.MaxSignatureSize
