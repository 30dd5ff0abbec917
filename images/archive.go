package images

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Air-gap archive format.
//
// Each image is written as its own uncompressed tar holding an OCI image layout
// (oci-layout, index.json, blobs/sha256/…), which K3s imports from
// /var/lib/rancher/k3s/agent/images/ with containerd's importer, as `ctr images import`
// does. Why this shape:
//   - OCI layout, not docker-archive: containerd names an imported image after the
//     "io.containerd.image.name" annotation of each index.json entry, which may hold a
//     digest-pinned name ("docker.io/x/y@sha256:…"); docker-archive's RepoTags carry
//     tags only. So references by tag and by digest both resolve offline.
//   - Uncompressed tar, one per image: layers are already gzip-compressed and are stored
//     as their registry bytes, so an unchanged image gives a byte-identical archive from
//     release to release and an OTA delta (chunked, content-defined) finds it unchanged;
//     recompressing the whole archive would change every byte after the first change.
//   - Fixed order (oci-layout, index.json, manifest, config, layers), mode, owner and
//     mtime: the archive is a function of the image and its names only.

// AnnotationImageName is the index.json annotation containerd's importer names images by.
const AnnotationImageName = "io.containerd.image.name"

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// ArchiveName returns the file name of img's air-gap archive, derived from its reference:
// "docker.io_rancher_mirrored-pause_3.6.tar".
func ArchiveName(img Image) string {
	return unsafeChars.ReplaceAllString(strings.NewReplacer("/", "_", ":", "_", "@", "_").Replace(img.Ref), "_") + ".tar"
}

// WriteArchive writes img with all of its Names as an uncompressed OCI-layout tar.
func WriteArchive(w io.Writer, img Image) error {
	raw, err := img.Image.RawManifest()
	if err != nil {
		return fmt.Errorf("archive of %s: %w", img.Ref, err)
	}
	mt, err := img.Image.MediaType()
	if err != nil {
		return fmt.Errorf("archive of %s: %w", img.Ref, err)
	}
	m, err := img.Image.Manifest()
	if err != nil {
		return fmt.Errorf("archive of %s: %w", img.Ref, err)
	}
	platform := img.Platform
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, n := range img.Names {
		ann := map[string]string{AnnotationImageName: n}
		if i := strings.LastIndexByte(n, ':'); i > strings.LastIndexByte(n, '/') && !strings.Contains(n, "@") {
			ann["org.opencontainers.image.ref.name"] = n[i+1:]
		}
		idx.Manifests = append(idx.Manifests, v1.Descriptor{
			MediaType: mt, Size: int64(len(raw)), Digest: img.ManifestDigest,
			Platform: &platform, Annotations: ann,
		})
	}
	rawIdx, err := json.Marshal(idx)
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	file := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}); err != nil {
			return err
		}
		n, err := io.Copy(tw, r)
		if err == nil && n != size {
			err = fmt.Errorf("%s: %d bytes, want %d", name, n, size)
		}
		return err
	}
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, ModTime: epoch, Typeflag: tar.TypeDir, Format: tar.FormatUSTAR})
	}
	layout := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	blob := func(d v1.Hash, size int64, open func() (io.ReadCloser, error)) error {
		rc, err := open()
		if err != nil {
			return err
		}
		defer rc.Close()
		return file("blobs/"+d.Algorithm+"/"+d.Hex, size, rc)
	}
	steps := []func() error{
		func() error { return file("oci-layout", int64(len(layout)), bytes.NewReader(layout)) },
		func() error { return file("index.json", int64(len(rawIdx)), bytes.NewReader(rawIdx)) },
		func() error { return dir("blobs/") },
		func() error { return dir("blobs/sha256/") },
		func() error {
			return file("blobs/"+img.ManifestDigest.Algorithm+"/"+img.ManifestDigest.Hex, int64(len(raw)), bytes.NewReader(raw))
		},
	}
	if err := runAll(steps); err != nil {
		return fmt.Errorf("archive of %s: %w", img.Ref, err)
	}
	rawCfg, err := img.Image.RawConfigFile()
	if err != nil {
		return fmt.Errorf("archive of %s: %w", img.Ref, err)
	}
	if err := file("blobs/"+m.Config.Digest.Algorithm+"/"+m.Config.Digest.Hex, int64(len(rawCfg)), bytes.NewReader(rawCfg)); err != nil {
		return fmt.Errorf("archive of %s: %w", img.Ref, err)
	}
	seen := map[v1.Hash]bool{m.Config.Digest: true, img.ManifestDigest: true}
	for _, l := range m.Layers {
		if seen[l.Digest] {
			continue
		}
		seen[l.Digest] = true
		layer, err := img.Image.LayerByDigest(l.Digest)
		if err != nil {
			return fmt.Errorf("archive of %s: layer %s: %w", img.Ref, l.Digest, err)
		}
		if err := blob(l.Digest, l.Size, layer.Compressed); err != nil {
			return fmt.Errorf("archive of %s: layer %s: %w", img.Ref, l.Digest, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive of %s: %w", img.Ref, err)
	}
	return nil
}

func runAll(steps []func() error) error {
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}
