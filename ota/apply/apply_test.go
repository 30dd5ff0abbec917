package apply

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeimg/edgeimg/hw"
	"github.com/edgeimg/edgeimg/hw/filecard"
	"github.com/edgeimg/edgeimg/hw/rpi4"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

const mib = 1 << 20

// The synthetic card: partitions 1 (config), 2/3 (boot A/B), 5/6 (system A/B).
var extents = map[int]filecard.Extent{
	1: {Start: 1 * mib, Size: 1 * mib},
	2: {Start: 2 * mib, Size: 1 * mib},
	3: {Start: 3 * mib, Size: 1 * mib},
	5: {Start: 4 * mib, Size: 4 * mib},
	6: {Start: 8 * mib, Size: 4 * mib},
}

const (
	cmdA = "console=tty1 root=PARTUUID=0badcafe-05 rootfstype=ext4 ro rootwait panic=10\n"
	cmdB = "console=tty1 root=PARTUUID=0badcafe-06 rootfstype=ext4 ro rootwait panic=10\n"
)

// fakeFAT returns a boot partition image: a FAT-looking boot sector and slot A's cmdline.txt
// at cmdOff.
func fakeFAT(seed uint64, size, cmdOff int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := 512; i < size; i++ {
		b[i] = byte(r.Uint32())
	}
	copy(b[3:], "mkfs.fat")
	copy(b[82:], "FAT32   ")
	b[510], b[511] = 0x55, 0xaa
	copy(b[cmdOff:], cmdA)
	return b
}

func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// newCard writes a card image: autoboot.txt booting slot A, slot A's boot and system
// partitions filled, slot B empty; and powers it on.
func newCard(t *testing.T) *filecard.Card {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "card.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	must(t, f.Truncate(12*mib))
	_, err = f.WriteAt(rpi4.Autoboot(2, 3), extents[1].Start+8*512)
	must(t, err)
	_, err = f.WriteAt(fakeFAT(1, 200<<10, 70000), extents[2].Start)
	must(t, err)
	_, err = f.WriteAt(randBytes(2, 3*mib), extents[5].Start)
	must(t, err)
	c, err := filecard.New(img, extents, filepath.Join(dir, "state"))
	must(t, err)
	return c
}

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

type detRand byte

func (d *detRand) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(*d)
		*d++
	}
	return len(b), nil
}

func key(t testing.TB, seed byte) (ed25519.PrivateKey, ed25519.PublicKey) {
	r := detRand(seed)
	priv, pub, err := bundle.GenerateKey(&r)
	must(t, err)
	sk, err := bundle.ParsePrivateKey(priv)
	must(t, err)
	pk, err := bundle.ParsePublicKey(pub)
	must(t, err)
	return sk, pk
}

func source(name string, b []byte) bundle.Source {
	return bundle.Source{Name: name, Size: int64(len(b)), Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
}

type release struct {
	m      bundle.Manifest
	boot   []byte
	cmdOff int
	system []byte
}

func newRelease(version string, seed uint64, cmdOff int) release {
	return release{
		m:    bundle.Manifest{Name: "demo", Version: version, Board: "rpi4", LayoutVersion: 1, MinVersion: "0"},
		boot: fakeFAT(seed, 150<<10, cmdOff), cmdOff: cmdOff, system: randBytes(seed, 2*mib+12345),
	}
}

func (r release) bundle(t testing.TB, sk ed25519.PrivateKey) []byte {
	bs := source(bundle.PartBoot, r.boot)
	bs.Patch = &bundle.Patch{Offset: int64(r.cmdOff), From: "a", Slots: map[string]string{"a": cmdA, "b": cmdB}}
	var buf bytes.Buffer
	_, err := bundle.Write(&buf, r.m, sk, []bundle.Source{bs, source(bundle.PartSystem, r.system)})
	must(t, err)
	return buf.Bytes()
}

func partSum(t testing.TB, c *filecard.Card, n int) [32]byte {
	p, err := c.Partition(n)
	must(t, err)
	defer p.Close()
	b := make([]byte, p.Size())
	_, err = p.ReadAt(b, 0)
	must(t, err)
	return sha256.Sum256(b)
}

func partBytes(t testing.TB, c *filecard.Card, n, size int) []byte {
	p, err := c.Partition(n)
	must(t, err)
	defer p.Close()
	b := make([]byte, size)
	_, err = p.ReadAt(b, 0)
	must(t, err)
	return b
}

func TestApply(t *testing.T) {
	sk, pk := key(t, 1)
	// cmdline.txt beyond the held-back header, and inside it.
	for _, cmdOff := range []int{100000, 1024} {
		c := newCard(t)
		rel := newRelease("2", 9, cmdOff)
		activeBoot, activeSys := partSum(t, c, 2), partSum(t, c, 5)
		autoboot, err := c.Autoboot()
		must(t, err)

		res, err := Apply(context.Background(), bytes.NewReader(rel.bundle(t, sk)), target(c, bundle.NewKeyring(pk), "1"))
		must(t, err)
		if res.Slot.Name != "b" || res.Manifest.Version != "2" || res.KeyID != bundle.KeyID(pk) {
			t.Fatalf("result %+v", res)
		}
		if partSum(t, c, 2) != activeBoot || partSum(t, c, 5) != activeSys {
			t.Fatal("the active slot changed")
		}
		if got := partBytes(t, c, 6, len(rel.system)); !bytes.Equal(got, rel.system) {
			t.Fatal("slot B's system partition differs from the bundle's system part")
		}
		wantBoot := bytes.Clone(rel.boot)
		copy(wantBoot[cmdOff:], cmdB)
		if got := partBytes(t, c, 3, len(rel.boot)); !bytes.Equal(got, wantBoot) {
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
		beforeA := partSum(t, c, 5)
		if _, err := Apply(context.Background(), bytes.NewReader(newRelease("3", 10, cmdOff).bundle(t, sk)), target(c, bundle.NewKeyring(pk), "2")); !errors.Is(err, ErrTrialBoot) {
			t.Fatalf("update during a trial boot: %v", err)
		}
		if partSum(t, c, 5) != beforeA {
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
		if _, err := Apply(context.Background(), bytes.NewReader(newRelease("3", 10, cmdOff).bundle(t, sk)), target(c, bundle.NewKeyring(pk), "2")); err != nil {
			t.Fatalf("update after the commit, in the same boot: %v", err)
		}
		if partSum(t, c, 5) == beforeA {
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
		res, err = Apply(context.Background(), bytes.NewReader(rel3.bundle(t, sk)), target(c, bundle.NewKeyring(pk), "2"))
		must(t, err)
		if res.Slot.Name != "a" {
			t.Fatalf("second update went to %s", res.Slot.Name)
		}
		if got := partBytes(t, c, 5, len(rel3.system)); !bytes.Equal(got, rel3.system) {
			t.Fatal("slot A's system partition differs from release 3's")
		}
		if got := partBytes(t, c, 2, len(rel3.boot)); !bytes.Equal(got, rel3.boot) {
			t.Fatal("slot A's boot partition differs from release 3's boot part (slot A's cmdline)")
		}
		if got := partBytes(t, c, 6, len(rel.system)); !bytes.Equal(got, rel.system) {
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
	sk, pk := key(t, 1)
	foreign, _ := key(t, 99)
	keys := bundle.NewKeyring(pk)
	good := newRelease("2", 9, 100000)
	g := good.bundle(t, sk)
	with := func(edit func(r *release)) []byte {
		r := good
		edit(&r)
		return r.bundle(t, sk)
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
		{"unknown key", good.bundle(t, foreign), "1", bundle.ErrUnknownKey},
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
		{"wrong board", with(func(r *release) { r.m.Board = "rpi5" }), "1", bundle.ErrWrongBoard},
		{"layout", with(func(r *release) { r.m.LayoutVersion = 2 }), "1", bundle.ErrLayout},
		{"downgrade", with(func(r *release) { r.m.Version = "1.9" }), "2", bundle.ErrDowngrade},
		{"same version", g, "2", bundle.ErrDowngrade},
		{"min version", with(func(r *release) { r.m.MinVersion = "1.5" }), "1.4.9", bundle.ErrMinVersion},
		{"bigger than the slot", with(func(r *release) { r.system = randBytes(3, 4*mib+1) }), "1", bundle.ErrTooBig},
		{"manifest lies about sizes", retar(t, g, func(n string, d []byte) []byte {
			if n == bundle.PartSystem {
				return d[:len(d)-4096]
			}
			return d
		}), "1", bundle.ErrSizeMismatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			card := newCard(t)
			// Slot B holds an older good release: a rejected update must not leave it
			// marked bootable for a trial either.
			activeBoot, activeSys := partSum(t, card, 2), partSum(t, card, 5)
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
			if partSum(t, card, 2) != activeBoot || partSum(t, card, 5) != activeSys {
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
	card := newCard(t)
	if _, err := Apply(context.Background(), bytes.NewReader(with(func(r *release) { r.m.Version = "1"; r.m.Rollback = true })), target(card, keys, "2")); err != nil {
		t.Fatalf("rollback release: %v", err)
	}
}

// A previously installed good slot B, then a bad update: the hash mismatch must leave B
// unbootable (its boot sector is erased first and only written back once all parts verified).
func TestHashMismatchUnmarksSlot(t *testing.T) {
	sk, pk := key(t, 1)
	card := newCard(t)
	_, err := Apply(context.Background(), bytes.NewReader(newRelease("2", 9, 100000).bundle(t, sk)), target(card, bundle.NewKeyring(pk), "1"))
	must(t, err)
	if !card.Bootable(hw.Slot{Name: "b", Boot: 3, System: 6}) {
		t.Fatal("slot B not bootable after a good update")
	}
	bad := retar(t, newRelease("3", 11, 100000).bundle(t, sk), func(n string, d []byte) []byte {
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
