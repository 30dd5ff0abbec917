package apply

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/edgeimg/edgeimg/hw"
	"github.com/edgeimg/edgeimg/hw/filecard"
	"github.com/edgeimg/edgeimg/hw/rpi4"
	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/otatest"
)

const mib = otatest.MiB

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func target(c *filecard.Card, keys bundle.Keyring, version string) Target {
	return Target{
		Keys:      keys,
		Installed: Installed{Board: "rpi4", LayoutVersion: 1, Version: version},
		Switch:    c.Switch(),
		Card:      CardFunc(func(n int) (Partition, error) { return c.Partition(n) }),
	}
}

// newRelease is release version: a boot part with slot A's cmdline.txt at cmdOff and a
// system part, both from seed.
func newRelease(version string, seed uint64, cmdOff int) otatest.Release {
	return otatest.Release{
		Manifest: otatest.Manifest(version),
		Boot:     otatest.FakeFAT(seed, 150<<10, cmdOff), CmdOff: cmdOff, System: otatest.RandBytes(seed, 2*mib+12345),
	}
}

func TestApply(t *testing.T) {
	sk, pk := otatest.Key(t, 1)
	// cmdline.txt beyond the held-back header, and inside it.
	for _, cmdOff := range []int{100000, 1024} {
		c := otatest.NewCard(t)
		rel := newRelease("2", 9, cmdOff)
		activeBoot, activeSys := otatest.PartSum(t, c, 2), otatest.PartSum(t, c, 5)
		autoboot, err := c.Autoboot()
		must(t, err)

		res, err := Apply(context.Background(), bytes.NewReader(rel.Bundle(t, sk)), target(c, bundle.NewKeyring(pk), "1"))
		must(t, err)
		if res.Slot.Name != "b" || res.Manifest.Version != "2" || res.KeyID != bundle.KeyID(pk) {
			t.Fatalf("result %+v", res)
		}
		if otatest.PartSum(t, c, 2) != activeBoot || otatest.PartSum(t, c, 5) != activeSys {
			t.Fatal("the active slot changed")
		}
		if got := otatest.PartBytes(t, c, 6, len(rel.System)); !bytes.Equal(got, rel.System) {
			t.Fatal("slot B's system partition differs from the bundle's system part")
		}
		wantBoot := bytes.Clone(rel.Boot)
		copy(wantBoot[cmdOff:], otatest.CmdB)
		if got := otatest.PartBytes(t, c, 3, len(rel.Boot)); !bytes.Equal(got, wantBoot) {
			t.Fatal("slot B's boot partition differs from the boot part with slot B's cmdline.txt")
		}
		after, err := c.Autoboot()
		must(t, err)
		if !bytes.Equal(after, autoboot) || len(after) != rpi4.AutobootSize {
			t.Fatal("autoboot.txt changed by arming a trial of the slot it already tries")
		}

		// Trial boot, commit, and the next boots stay on B.
		sw := c.Switch()
		must(t, sw.TryReboot(context.Background()))
		booted, err := c.PowerOn()
		must(t, err)
		trial, err := sw.IsTrial()
		must(t, err)
		if booted.Name != "b" || !trial {
			t.Fatalf("trial boot went to %s (trial %v)", booted.Name, trial)
		}
		// A crash during the trial returns to A.
		booted, err = c.PowerOn()
		must(t, err)
		if booted.Name != "a" {
			t.Fatalf("a reboot during the trial went to %s, want a", booted.Name)
		}
		must(t, sw.TryReboot(context.Background()))
		_, err = c.PowerOn()
		must(t, err)
		// During the trial, slot A is the fallback: no update may write it.
		beforeA := otatest.PartSum(t, c, 5)
		if _, err := Apply(context.Background(), bytes.NewReader(newRelease("3", 10, cmdOff).Bundle(t, sk)), target(c, bundle.NewKeyring(pk), "2")); !errors.Is(err, ErrTrialBoot) {
			t.Fatalf("update during a trial boot: %v", err)
		}
		if otatest.PartSum(t, c, 5) != beforeA {
			t.Fatal("an update during the trial wrote the fallback slot")
		}
		must(t, sw.Commit(res.Slot))
		after, err = c.Autoboot()
		must(t, err)
		if !bytes.Equal(after, rpi4.Autoboot(3, 2)) {
			t.Fatalf("committed autoboot.txt:\n%s", after)
		}
		// Committed, the trial boot is no longer one: slot A is not a fallback any more, and
		// the next release may be installed there during the same boot.
		if trial, err := sw.IsTrial(); err != nil || trial {
			t.Fatalf("after the commit IsTrial = %v, %v", trial, err)
		}
		if _, err := Apply(context.Background(), bytes.NewReader(newRelease("3", 10, cmdOff).Bundle(t, sk)), target(c, bundle.NewKeyring(pk), "2")); err != nil {
			t.Fatalf("update after the commit, in the same boot: %v", err)
		}
		if otatest.PartSum(t, c, 5) == beforeA {
			t.Fatal("release 3 was not written to slot A")
		}
		must(t, sw.Commit(res.Slot)) // keep B the default for what follows
		for range 2 {
			booted, err = c.PowerOn()
			must(t, err)
			if booted.Name != "b" {
				t.Fatalf("after the commit the card boots %s", booted.Name)
			}
		}
		// The next update goes to slot A with slot A's cmdline.txt.
		rel3 := newRelease("3", 10, cmdOff)
		res, err = Apply(context.Background(), bytes.NewReader(rel3.Bundle(t, sk)), target(c, bundle.NewKeyring(pk), "2"))
		must(t, err)
		if res.Slot.Name != "a" {
			t.Fatalf("second update went to %s", res.Slot.Name)
		}
		if got := otatest.PartBytes(t, c, 5, len(rel3.System)); !bytes.Equal(got, rel3.System) {
			t.Fatal("slot A's system partition differs from release 3's")
		}
		if got := otatest.PartBytes(t, c, 2, len(rel3.Boot)); !bytes.Equal(got, rel3.Boot) {
			t.Fatal("slot A's boot partition differs from release 3's boot part (slot A's cmdline)")
		}
		if got := otatest.PartBytes(t, c, 6, len(rel.System)); !bytes.Equal(got, rel.System) {
			t.Fatal("the update to slot A touched slot B, the active one")
		}
	}
}

// retar rewrites a bundle's entries through f.
func retar(t testing.TB, b []byte, f func(name string, data []byte) []byte) []byte {
	tr := tar.NewReader(bytes.NewReader(b))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		d, _ := io.ReadAll(tr)
		nd := f(h.Name, d)
		h.Size = int64(len(nd))
		must(t, tw.WriteHeader(h))
		_, err = tw.Write(nd)
		must(t, err)
	}
	must(t, tw.Close())
	return out.Bytes()
}

func TestBadBundles(t *testing.T) {
	sk, pk := otatest.Key(t, 1)
	foreign, _ := otatest.Key(t, 99)
	keys := bundle.NewKeyring(pk)
	good := newRelease("2", 9, 100000)
	g := good.Bundle(t, sk)
	with := func(edit func(r *otatest.Release)) []byte {
		r := good
		edit(&r)
		return r.Bundle(t, sk)
	}
	type tc struct {
		name      string
		b         []byte
		installed string
		want      bundle.Reason
	}
	cases := []tc{
		{"bad signature", retar(t, g, func(n string, d []byte) []byte {
			if n == bundle.ManifestFile {
				return bytes.Replace(d, []byte(`"minVersion":"0"`), []byte(`"minVersion":"1"`), 1)
			}
			return d
		}), "1", bundle.ErrBadSignature},
		{"unknown key", good.Bundle(t, foreign), "1", bundle.ErrUnknownKey},
		{"truncated in the system part", g[:len(g)-mib], "1", bundle.ErrTruncated},
		{"truncated in the boot part", g[:100000], "1", bundle.ErrTruncated},
		{"system hash mismatch", retar(t, g, func(n string, d []byte) []byte {
			if n == bundle.PartSystem {
				d = bytes.Clone(d)
				d[len(d)-1] ^= 0x80
			}
			return d
		}), "1", bundle.ErrHashMismatch},
		{"boot hash mismatch", retar(t, g, func(n string, d []byte) []byte {
			if n == bundle.PartBoot {
				d = bytes.Clone(d)
				d[600] ^= 1
			}
			return d
		}), "1", bundle.ErrHashMismatch},
		{"wrong board", with(func(r *otatest.Release) { r.Manifest.Board = "rpi5" }), "1", bundle.ErrWrongBoard},
		{"layout", with(func(r *otatest.Release) { r.Manifest.LayoutVersion = 2 }), "1", bundle.ErrLayout},
		{"downgrade", with(func(r *otatest.Release) { r.Manifest.Version = "1.9" }), "2", bundle.ErrDowngrade},
		{"same version", g, "2", bundle.ErrDowngrade},
		{"min version", with(func(r *otatest.Release) { r.Manifest.MinVersion = "1.5" }), "1.4.9", bundle.ErrMinVersion},
		{"bigger than the slot", with(func(r *otatest.Release) { r.System = otatest.RandBytes(3, 4*mib+1) }), "1", bundle.ErrTooBig},
		{"manifest lies about sizes", retar(t, g, func(n string, d []byte) []byte {
			if n == bundle.PartSystem {
				return d[:len(d)-4096]
			}
			return d
		}), "1", bundle.ErrSizeMismatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			card := otatest.NewCard(t)
			// Slot B holds an older good release: a rejected update must not leave it
			// marked bootable for a trial either.
			activeBoot, activeSys := otatest.PartSum(t, card, 2), otatest.PartSum(t, card, 5)
			autoboot, err := card.Autoboot()
			must(t, err)
			_, err = Apply(context.Background(), bytes.NewReader(c.b), target(card, keys, c.installed))
			var e *bundle.Error
			if !errors.Is(err, c.want) || !errors.As(err, &e) {
				t.Fatalf("got %v, want %s", err, c.want)
			}
			t.Logf("rejected: %v", err)
			if card.Bootable(hw.Slot{Name: "b", Boot: 3, System: 6}) {
				t.Error("slot B is bootable after a rejected update")
			}
			if otatest.PartSum(t, card, 2) != activeBoot || otatest.PartSum(t, card, 5) != activeSys {
				t.Error("the active slot changed")
			}
			after, _ := card.Autoboot()
			if !bytes.Equal(after, autoboot) {
				t.Error("autoboot.txt changed")
			}
			// Even a trial reboot now falls back to slot A: B is not bootable.
			must(t, card.Switch().TryReboot(context.Background()))
			if _, err := card.PowerOn(); !errors.Is(err, filecard.ErrNoBoot) {
				t.Errorf("trial boot of the rejected slot: %v, want no boot", err)
			}
			if s, err := card.PowerOn(); err != nil || s.Name != "a" {
				t.Errorf("next boot: %v %v, want slot a", s, err)
			}
		})
	}
	// A rollback release may go back.
	card := otatest.NewCard(t)
	if _, err := Apply(context.Background(), bytes.NewReader(with(func(r *otatest.Release) { r.Manifest.Version = "1"; r.Manifest.Rollback = true })), target(card, keys, "2")); err != nil {
		t.Fatalf("rollback release: %v", err)
	}
}

// A previously installed good slot B, then a bad update: the hash mismatch must leave B
// unbootable (its boot sector is erased first and only written back once all parts verified).
func TestHashMismatchUnmarksSlot(t *testing.T) {
	sk, pk := otatest.Key(t, 1)
	card := otatest.NewCard(t)
	_, err := Apply(context.Background(), bytes.NewReader(newRelease("2", 9, 100000).Bundle(t, sk)), target(card, bundle.NewKeyring(pk), "1"))
	must(t, err)
	if !card.Bootable(hw.Slot{Name: "b", Boot: 3, System: 6}) {
		t.Fatal("slot B not bootable after a good update")
	}
	bad := retar(t, newRelease("3", 11, 100000).Bundle(t, sk), func(n string, d []byte) []byte {
		if n == bundle.PartSystem {
			d = bytes.Clone(d)
			d[5] ^= 1
		}
		return d
	})
	if _, err := Apply(context.Background(), bytes.NewReader(bad), target(card, bundle.NewKeyring(pk), "1")); !errors.Is(err, bundle.ErrHashMismatch) {
		t.Fatalf("got %v", err)
	}
	if card.Bootable(hw.Slot{Name: "b", Boot: 3, System: 6}) {
		t.Fatal("slot B still bootable after a bundle with a bad system part was written into it")
	}
}
