package builder

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/edgeimg/edgeimg/builder/disk"
	"github.com/edgeimg/edgeimg/builder/output"
	"github.com/edgeimg/edgeimg/builder/spec"
	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/hw"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// TrustedKeysDir is where the image holds the public keys its devices accept updates from,
// one PEM file per key named KEYID.pub.
const TrustedKeysDir = "usr/lib/edgeimg/ota/trusted"

// OTAConfigFile is the agent's OTA settings in the image (OTAConfig as JSON), written when
// the spec has an ota section.
const OTAConfigFile = "usr/lib/edgeimg/ota/ota.json"

// OTAConfig is what the agent reads from OTAConfigFile.
type OTAConfig struct {
	// HealthTimeoutSeconds is ota.healthTimeout: how long a trial boot may take to become
	// healthy before the device returns to the old slot.
	HealthTimeoutSeconds int64 `json:"health_timeout_seconds"`
}

// maxKeyFile bounds a PEM key file.
const maxKeyFile = 64 << 10

// otaKeys are the spec's OTA keys, read and checked, and the settings baked with them.
type otaKeys struct {
	signer  ed25519.PrivateKey // nil: no bundle is written
	trusted []ed25519.PublicKey
	config  OTAConfig
}

// loadOTA reads ota.signingKey and ota.trustedKeys; nil without an ota section.
func loadOTA(s *spec.Spec) (*otaKeys, error) {
	o := s.OTA
	if o == nil {
		return nil, nil
	}
	k := &otaKeys{config: OTAConfig{HealthTimeoutSeconds: o.HealthTimeoutSeconds()}}
	if o.SigningKey != "" {
		b, err := readKeyFile(o.SigningKey)
		if err != nil {
			return nil, fmt.Errorf("ota.signingKey: %w", err)
		}
		if k.signer, err = bundle.ParsePrivateKey(b); err != nil {
			return nil, fmt.Errorf("ota.signingKey: %s: %w", o.SigningKey, err)
		}
	}
	for i, p := range o.TrustedKeys {
		b, err := readKeyFile(p)
		if err != nil {
			return nil, fmt.Errorf("ota.trustedKeys[%d]: %w", i, err)
		}
		pk, err := bundle.ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("ota.trustedKeys[%d]: %s: %w", i, p, err)
		}
		k.trusted = append(k.trusted, pk)
	}
	if k.signer != nil {
		pub := k.signer.Public().(ed25519.PublicKey)
		if len(k.trusted) == 0 {
			k.trusted = []ed25519.PublicKey{pub}
		} else if _, ok := bundle.NewKeyring(k.trusted...)[bundle.KeyID(pub)]; !ok {
			return nil, fmt.Errorf("ota.trustedKeys: the signing key %s is not among them: devices of this image would refuse its own updates", o.SigningKey)
		}
	}
	return k, nil
}

func readKeyFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a key", p, maxKeyFile)
	}
	return b, nil
}

// installOTAKeys bakes the trusted public keys into the image (TrustedKeysDir/KEYID.pub) and
// the agent's OTA settings (OTAConfigFile).
func installOTAKeys(root *tree.Tree, k *otaKeys, epoch time.Time) ([]string, error) {
	if k == nil {
		return nil, nil
	}
	cfg, err := json.Marshal(k.config)
	if err != nil {
		return nil, err
	}
	if err := root.WriteFile(OTAConfigFile, append(cfg, '\n'), 0o644, epoch); err != nil {
		return nil, fmt.Errorf("ota: %w", err)
	}
	ring := bundle.NewKeyring(k.trusted...)
	ids := make([]string, 0, len(ring))
	for id := range ring {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	added := []string{"/" + OTAConfigFile}
	for _, id := range ids {
		p := path.Join(TrustedKeysDir, id+".pub")
		if err := root.WriteFile(p, bundle.PublicKeyPEM(ring[id]), 0o644, epoch); err != nil {
			return nil, fmt.Errorf("ota: %w", err)
		}
		added = append(added, "/"+p)
	}
	return added, nil
}

// otaWarnings says plainly when the build makes no update bundle.
func otaWarnings(k *otaKeys) []string {
	switch {
	case k == nil:
		return []string{"OTA is off: the spec has no ota section, so no signed update bundle (.update) was written and devices of this image accept no updates"}
	case k.signer == nil:
		return []string{"OTA bundle not written: ota.signingKey is not set (devices trust the keys in ota.trustedKeys; sign updates elsewhere)"}
	}
	return nil
}

// writeBundle writes NAME-BOARD.update into the staging directory: slot A's boot partition
// (up to its last non-zero 4 KiB block) with both slots' cmdline.txt in the signed manifest,
// and slot A's system filesystem (its used bytes). It returns the file name.
func writeBundle(ctx context.Context, stage *staging, name string, s *spec.Spec, board hw.Board, lay *layout, d *diskResult, imgPath string, bootA *tree.Tree, k *otaKeys) (string, error) {
	if k == nil || k.signer == nil {
		return "", nil
	}
	var bootP, sysP *PartitionInfo
	for i := range d.Partitions {
		switch d.Partitions[i].Role {
		case hw.RoleBootA:
			bootP = &d.Partitions[i]
		case hw.RoleSystemA:
			sysP = &d.Partitions[i]
		}
	}
	if bootP == nil || sysP == nil || sysP.Used <= 0 {
		return "", fmt.Errorf("ota bundle: the image has no slot A boot or system partition")
	}
	img, err := os.Open(imgPath)
	if err != nil {
		return "", fmt.Errorf("ota bundle: %w", err)
	}
	defer img.Close()
	bootSize, err := usedSize(ctx, img, bootP.Start, bootP.Size)
	if err != nil {
		return "", fmt.Errorf("ota bundle: boot partition: %w", err)
	}
	slots := board.Slots()
	cmdA, err := bootA.ReadFile("cmdline.txt")
	if err != nil {
		return "", fmt.Errorf("ota bundle: %w", err)
	}
	uuidA := disk.PartUUID(lay.Table.DiskSignature, slots[0].System)
	uuidB := disk.PartUUID(lay.Table.DiskSignature, slots[1].System)
	if strings.Count(string(cmdA), uuidA) != 1 || len(uuidA) != len(uuidB) {
		return "", fmt.Errorf("ota bundle: slot A's cmdline.txt does not name its root %s exactly once", uuidA)
	}
	cmdB := strings.Replace(string(cmdA), uuidA, uuidB, 1)
	off, err := findOnce(ctx, img, bootP.Start, bootSize, cmdA)
	if err != nil {
		return "", fmt.Errorf("ota bundle: cmdline.txt in the boot partition: %w", err)
	}
	section := func(start, size int64) func() (io.ReadCloser, error) {
		return func() (io.ReadCloser, error) { return io.NopCloser(io.NewSectionReader(img, start, size)), nil }
	}
	parts := []bundle.Source{
		{Name: bundle.PartBoot, Size: bootSize, Open: section(bootP.Start, bootSize),
			Patch: &bundle.Patch{Offset: off, From: slots[0].Name, Slots: map[string]string{slots[0].Name: string(cmdA), slots[1].Name: cmdB}}},
		{Name: bundle.PartSystem, Size: sysP.Used, Open: section(sysP.Start, sysP.Used)},
	}
	m := bundle.Manifest{Name: s.Name, Version: s.Version, Board: board.Name(), LayoutVersion: lay.Version,
		MinVersion: s.OTA.MinVersion, Rollback: s.OTA.Rollback}
	file := name + bundle.Ext
	sum, err := output.AtomicWrite(stage.path(file), func(w io.Writer) error {
		_, err := bundle.Write(w, m, k.signer, parts)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("ota bundle: %w", err)
	}
	st, err := os.Stat(stage.path(file))
	if err != nil {
		return "", err
	}
	stage.add(Output{File: file, Size: st.Size(), SHA256: sum})
	return file, nil
}

// usedSize returns the length of [start, start+size) up to its last non-zero 4 KiB block.
func usedSize(ctx context.Context, r io.ReaderAt, start, size int64) (int64, error) {
	const blk = 4096
	buf := make([]byte, 1<<20)
	used := int64(0)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n := int(min(int64(len(buf)), size-off))
		if _, err := r.ReadAt(buf[:n], start+off); err != nil {
			return 0, err
		}
		for i := (n - 1) / blk * blk; i >= 0; i -= blk {
			if !allZero(buf[i:min(i+blk, n)]) {
				used = off + int64(min(i+blk, n))
				break
			}
		}
	}
	return used, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// findOnce returns the offset of the only occurrence of needle in [start, start+size).
func findOnce(ctx context.Context, r io.ReaderAt, start, size int64, needle []byte) (int64, error) {
	const chunk = 1 << 20
	buf := make([]byte, chunk+len(needle))
	found := int64(-1)
	for off := int64(0); off < size; off += chunk {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n := int(min(int64(len(buf)), size-off))
		if _, err := r.ReadAt(buf[:n], start+off); err != nil {
			return 0, err
		}
		for i := 0; ; {
			j := bytes.Index(buf[i:n], needle)
			if j < 0 || i+j >= chunk {
				break
			}
			if found >= 0 {
				return 0, fmt.Errorf("found twice (at %d and %d)", found, off+int64(i+j))
			}
			found = off + int64(i+j)
			i += j + 1
		}
	}
	if found < 0 {
		return 0, fmt.Errorf("not found")
	}
	return found, nil
}
