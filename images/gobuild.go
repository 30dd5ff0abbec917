package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// GoImageBinary is where BuildGoImage puts the program in the image.
const GoImageBinary = "/usr/local/bin/app"

// BuildGoImage builds the Go main package pkgPath (a "./…" path relative to the module
// root dir, or an import path) for each platform with CGO_ENABLED=0, -trimpath and an
// empty build ID, puts the static binary onto an empty base as one layer, and returns an
// OCI image index of the platforms. The result is reproducible: every timestamp is created
// (pass the build epoch), the user is 65532 (nonroot).
func BuildGoImage(ctx context.Context, dir, pkgPath string, platforms []v1.Platform, created time.Time) (v1.ImageIndex, error) {
	if len(platforms) == 0 {
		return nil, fmt.Errorf("building %s: no platforms", pkgPath)
	}
	tmp, err := os.MkdirTemp("", "edgeimg-gobuild-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, pl := range platforms {
		out := filepath.Join(tmp, pl.OS+"-"+pl.Architecture+pl.Variant)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", out, pkgPath)
		cmd.Dir = dir
		env := append(os.Environ(), "CGO_ENABLED=0", "GOOS="+pl.OS, "GOARCH="+pl.Architecture, "GOFLAGS=-mod=mod")
		if pl.Architecture == "arm" && strings.HasPrefix(pl.Variant, "v") {
			env = append(env, "GOARM="+strings.TrimPrefix(pl.Variant, "v"))
		}
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("building %s for %s: %w: %s", pkgPath, pl.String(), err, strings.TrimSpace(stderr.String()))
		}
		img, err := goImage(out, pl, created)
		if err != nil {
			return nil, fmt.Errorf("image of %s for %s: %w", pkgPath, pl.String(), err)
		}
		p := pl
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return idx, nil
}

func goImage(binary string, pl v1.Platform, created time.Time) (v1.Image, error) {
	data, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	layer, err := binaryLayer(data, created)
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{CreatedBy: "edgeimg BuildGoImage", Created: v1.Time{Time: created}},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = pl.OS, pl.Architecture, pl.Variant
	cf.Created = v1.Time{Time: created}
	cf.Config.Entrypoint = []string{GoImageBinary}
	cf.Config.User = "65532:65532"
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	return mutate.ConfigFile(img, cf)
}

// binaryLayer is a gzip-compressed tar holding the binary and its parent directories,
// with fixed owners and times; Go's gzip output is deterministic for a given input.
func binaryLayer(bin []byte, created time.Time) (v1.Layer, error) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, d := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: created, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(GoImageBinary, "/"), Mode: 0o755, Size: int64(len(bin)), ModTime: created, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := tb.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestCompression))
}
