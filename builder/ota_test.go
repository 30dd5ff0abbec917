package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/builder/spec"
	"github.com/edgeimg/edgeimg/hw"
	"github.com/edgeimg/edgeimg/hw/filecard"
	"github.com/edgeimg/edgeimg/hw/rpi4"
	"github.com/edgeimg/edgeimg/internal/testutil"
	"github.com/edgeimg/edgeimg/ota/apply"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

type seqRand byte

func (d *seqRand) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(*d)
		*d++
	}
	return len(b), nil
}

// TestBuildOTA builds an image with a signing key: the build writes a signed NAME-BOARD.update
// listed in SHA256SUMS, bakes the public key into the image, and the bundle applied to a copy
// of the image (a file-backed card) fills slot B with slot A's filesystems — checked with
// fsck.vfat and e2fsck — and slot B's own cmdline.txt, without touching slot A.
func TestBuildOTA(t *testing.T) {
	testutil.NeedTool(t, "debugfs")
	testutil.NeedTool(t, "e2fsck")
	testutil.NeedTool(t, "fsck.vfat")
	testutil.NeedTool(t, "mtype")
	dir := t.TempDir()
	r := seqRand(42)
	priv, pub, err := bundle.GenerateKey(&r)
	must(t, err)
	must(t, os.MkdirAll(filepath.Join(dir, "keys"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "keys/ota.key"), priv, 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "keys/ota.pub"), pub, 0o644))
	pk, err := bundle.ParsePublicKey(pub)
	must(t, err)

	res, err := build(t, dir, "ota:\n  signingKey: keys/ota.key\n  minVersion: \"6\"\n  healthTimeout: 5m\n")
	must(t, err)
	out := filepath.Join(dir, "out")
	upd := filepath.Join(out, "gw-rpi4.update")
	if res.Update != upd {
		t.Errorf("Result.Update %q, want %q", res.Update, upd)
	}
	sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	must(t, err)
	if !strings.Contains(string(sums), fileSum(t, upd)+"  gw-rpi4.update\n") {
		t.Errorf("SHA256SUMS does not list gw-rpi4.update:\n%s", sums)
	}
	for _, w := range res.Report.Warnings {
		if strings.Contains(w, "OTA") {
			t.Errorf("warning with a signing key: %s", w)
		}
	}

	var ext = map[int]filecard.Extent{}
	var sysA, bootA PartitionInfo
	for _, p := range res.Report.Partitions {
		ext[p.Number] = filecard.Extent{Start: p.Start, Size: p.Size}
		switch p.Role {
		case hw.RoleSystemA:
			sysA = p
		case hw.RoleBootA:
			bootA = p
		}
	}
	// The public key is in the image.
	sys := extract(t, res.Image, sysA.Start, sysA.Size)
	keyPath := "/" + TrustedKeysDir + "/" + bundle.KeyID(pk) + ".pub"
	got, err := exec.Command(testutil.NeedTool(t, "debugfs"), "-R", "cat "+keyPath, sys).Output()
	must(t, err)
	if string(got) != string(pub) {
		t.Fatalf("%s in the image:\n%s", keyPath, got)
	}
	// So are the agent's OTA settings, and the bundle carries ota.minVersion.
	got, err = exec.Command(testutil.NeedTool(t, "debugfs"), "-R", "cat /"+OTAConfigFile, sys).Output()
	must(t, err)
	if string(got) != `{"health_timeout_seconds":300}`+"\n" {
		t.Errorf("/%s in the image: %q", OTAConfigFile, got)
	}
	uf, err := os.Open(upd)
	must(t, err)
	m, _, err := bundle.PeekManifest(uf)
	uf.Close()
	must(t, err)
	if m.MinVersion != "6" || m.Rollback || m.Version != "7" {
		t.Errorf("bundle manifest: minVersion %q rollback %v version %q", m.MinVersion, m.Rollback, m.Version)
	}

	// Apply the bundle to a copy of the image, as the device booted from slot A would.
	card := filepath.Join(t.TempDir(), "card.img")
	testutil.Run(t, "cp", "--sparse=always", res.Image, card)
	c, err := filecard.New(card, ext, t.TempDir())
	must(t, err)
	sum := func(n int, size int64) [32]byte {
		p, err := c.Partition(n)
		must(t, err)
		defer p.Close()
		h := sha256.New()
		_, err = io.Copy(h, io.NewSectionReader(p, 0, size))
		must(t, err)
		return [32]byte(h.Sum(nil))
	}
	beforeA, beforeBootA := sum(5, sysA.Size), sum(2, bootA.Size)
	f, err := os.Open(upd)
	must(t, err)
	defer f.Close()
	result, err := apply.Apply(context.Background(), f, apply.Target{
		Keys:      bundle.NewKeyring(pk),
		Installed: apply.Installed{Board: "rpi4", LayoutVersion: res.Report.LayoutVersion, Version: "6"},
		Switch:    c.Switch(),
		Card:      apply.CardFunc(func(n int) (apply.Partition, error) { return c.Partition(n) }),
	})
	must(t, err)
	if result.Slot.Name != "b" || result.Manifest.Version != "7" || result.Manifest.Name != "gw" {
		t.Fatalf("applied %+v to %+v", result.Manifest, result.Slot)
	}
	if sum(5, sysA.Size) != beforeA || sum(2, bootA.Size) != beforeBootA {
		t.Fatal("slot A changed")
	}
	if sum(6, sysA.Used) != sum(5, sysA.Used) {
		t.Fatal("slot B's system bytes differ from slot A's filesystem")
	}
	testutil.Run(t, "e2fsck", "-fn", extract(t, card, ext[6].Start, sysA.Used))
	bootB := extract(t, card, ext[3].Start, ext[3].Size)
	testutil.Run(t, "fsck.vfat", "-n", bootB)
	cmdA := testutil.Run(t, "mtype", "-i", extract(t, card, ext[2].Start, ext[2].Size), "::cmdline.txt")
	cmdB := testutil.Run(t, "mtype", "-i", bootB, "::cmdline.txt")
	if !strings.Contains(cmdA, "-05 ") || !strings.Contains(cmdB, "-06 ") || strings.Replace(cmdA, "-05 ", "-06 ", 1) != cmdB {
		t.Fatalf("cmdline.txt of slot A:\n%s\nof slot B:\n%s", cmdA, cmdB)
	}

	// Trial boot and commit; autoboot.txt, read through FAT, stays 512 bytes.
	sw := c.Switch()
	must(t, sw.TryReboot(context.Background()))
	booted, err := c.PowerOn()
	must(t, err)
	if booted.Name != "b" {
		t.Fatalf("trial boot of %s", booted.Name)
	}
	must(t, sw.Commit(booted))
	ab := testutil.Run(t, "mtype", "-i", extract(t, card, ext[1].Start, ext[1].Size), "::autoboot.txt")
	if !bytes.Equal([]byte(ab), rpi4.Autoboot(3, 2)) {
		t.Fatalf("autoboot.txt after the commit (%d bytes):\n%s", len(ab), ab)
	}
	if booted, err := c.PowerOn(); err != nil || booted.Name != "b" {
		t.Fatalf("after the commit: %v %v", booted, err)
	}
}

// TestBuildNoOTA: without an ota section the report says OTA is off and no bundle is written.
func TestBuildNoOTAWarning(t *testing.T) {
	if w := otaWarnings(nil); len(w) != 1 || !strings.Contains(w[0], "OTA is off") {
		t.Fatalf("warnings %q", w)
	}
}

// TestLoadOTA: key files that are missing, of the wrong kind, or a signing key the trusted
// keys do not include stop the build naming the field.
func TestLoadOTA(t *testing.T) {
	dir := t.TempDir()
	w := func(name string, seed byte) (string, string) {
		r := seqRand(seed)
		priv, pub, err := bundle.GenerateKey(&r)
		must(t, err)
		k, p := filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
		must(t, os.WriteFile(k, priv, 0o600))
		must(t, os.WriteFile(p, pub, 0o644))
		return k, p
	}
	k1, p1 := w("one", 1)
	_, p2 := w("two", 2)
	for _, c := range []struct {
		ota  spec.OTA
		want string
	}{
		{spec.OTA{SigningKey: filepath.Join(dir, "missing.key")}, "ota.signingKey"},
		{spec.OTA{SigningKey: p1}, "ota.signingKey: " + p1 + ": not a PEM PRIVATE KEY"},
		{spec.OTA{TrustedKeys: []string{k1}}, "ota.trustedKeys[0]: " + k1 + ": not a PEM PUBLIC KEY"},
		{spec.OTA{SigningKey: k1, TrustedKeys: []string{p2}}, "the signing key " + k1 + " is not among them"},
	} {
		_, err := loadOTA(&spec.Spec{OTA: &c.ota})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.ota, err, c.want)
		}
	}
	k, err := loadOTA(&spec.Spec{OTA: &spec.OTA{SigningKey: k1, TrustedKeys: []string{p2, p1}}})
	must(t, err)
	if k.signer == nil || len(k.trusted) != 2 {
		t.Fatalf("%+v", k)
	}
	k, err = loadOTA(&spec.Spec{OTA: &spec.OTA{SigningKey: k1}})
	must(t, err)
	if len(k.trusted) != 1 || !k.trusted[0].Equal(k.signer.Public()) {
		t.Fatal("the signing key's public key is not trusted by default")
	}
}
