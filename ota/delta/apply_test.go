package delta

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeimg/edgeimg/hw/filecard"
	"github.com/edgeimg/edgeimg/hw/rpi4"
	"github.com/edgeimg/edgeimg/ota/apply"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// The simulated card: partitions 1 (config), 2/3 (boot A/B), 5/6 (system A/B).
var extents = map[int]filecard.Extent{
	1: {Start: 1 * mib, Size: 1 * mib},
	2: {Start: 2 * mib, Size: 2 * mib},
	3: {Start: 4 * mib, Size: 2 * mib},
	5: {Start: 6 * mib, Size: 12 * mib},
	6: {Start: 18 * mib, Size: 12 * mib},
}

// newCard writes a card booting slot A, which holds release r.
func newCard(t *testing.T, r *release) *filecard.Card {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "card.img")
	f, err := os.Create(img)
	must(t, err)
	defer f.Close()
	must(t, f.Truncate(30*mib))
	_, err = f.WriteAt(rpi4.Autoboot(2, 3), extents[1].Start+8*512)
	must(t, err)
	_, err = f.WriteAt(r.boot, extents[2].Start)
	must(t, err)
	_, err = f.WriteAt(r.system, extents[5].Start)
	must(t, err)
	c, err := filecard.New(img, extents, filepath.Join(dir, "state"))
	must(t, err)
	return c
}

func openPart(t *testing.T, c *filecard.Card, n int) *filecard.Partition {
	t.Helper()
	p, err := c.Partition(n)
	must(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func partBytes(t *testing.T, c *filecard.Card, n, size int) []byte {
	b := make([]byte, size)
	_, err := openPart(t, c, n).ReadAt(b, 0)
	must(t, err)
	return b
}

func target(t *testing.T, c *filecard.Card) apply.Target {
	_, pk := key(t)
	return apply.Target{
		Keys:      bundle.NewKeyring(pk),
		Installed: apply.Installed{Board: "rpi4", LayoutVersion: 1, Version: "1"},
		Switch:    c.Switch(),
		Card:      apply.CardFunc(func(n int) (apply.Partition, error) { return c.Partition(n) }),
	}
}

// deviceStream is what the agent does: scan the active slot (A: partitions 2 and 5, whole),
// pass the inactive one (B: 3 and 6) for in-place resume, stream.
func deviceStream(t *testing.T, c *filecard.Card, r *release, src ChunkSource) (io.ReadCloser, *Stats) {
	have := NewHave()
	for name, n := range map[string]int{"boot-a": 2, "system-a": 5} {
		p := openPart(t, c, n)
		must(t, have.Scan(context.Background(), name, p, p.Size()))
	}
	inPlace := map[string]io.ReaderAt{bundle.PartBoot: openPart(t, c, 3), bundle.PartSystem: openPart(t, c, 6)}
	rc, st, err := Stream(context.Background(), r.manifest, r.sig, r.m, r.idx, have, inPlace, src)
	must(t, err)
	t.Cleanup(func() { rc.Close() })
	return rc, st
}

func checkSlotB(t *testing.T, c *filecard.Card, r *release) {
	t.Helper()
	if !bytes.Equal(partBytes(t, c, 6, len(r.system)), r.system) {
		t.Fatal("slot B's system partition is not release 2's system part")
	}
	want := bytes.Clone(r.boot)
	copy(want[cmdOff:], cmdB)
	if !bytes.Equal(partBytes(t, c, 3, len(r.boot)), want) {
		t.Fatal("slot B's boot partition is not release 2's boot part with slot B's cmdline.txt")
	}
	must(t, c.Switch().TryReboot(context.Background()))
	s, err := c.PowerOn()
	must(t, err)
	if s.Name != "b" {
		t.Fatalf("the trial boot went to slot %s", s.Name)
	}
}

// TestApplyDelta installs release 2 on a card running release 1 from a delta stream with
// ota/apply.Apply, unchanged.
func TestApplyDelta(t *testing.T) {
	r1, r2 := twoReleases(t)
	c := newCard(t, r1)
	activeSys := partBytes(t, c, 5, int(extents[5].Size))
	src := newSource(t, r2.boot, r2.system)
	rc, st := deviceStream(t, c, r2, src)
	res, err := apply.Apply(context.Background(), rc, target(t, c))
	must(t, err)
	if res.Slot.Name != "b" || res.Manifest.Version != "2" {
		t.Fatalf("result %+v", res)
	}
	counts := st.Counts()
	t.Logf("%+v", counts)
	if counts.Total != int64(len(r2.boot)+len(r2.system)) || counts.Downloaded+counts.Reused() != counts.Total ||
		counts.Downloaded > counts.Total/4 {
		t.Fatalf("counts %+v", counts)
	}
	if !bytes.Equal(partBytes(t, c, 5, int(extents[5].Size)), activeSys) {
		t.Fatal("the active system partition changed")
	}
	checkSlotB(t, c, r2)
}

var errCut = errors.New("network gone")

// TestApplyDeltaResume interrupts a delta install half-way, then installs again: the chunks
// the first try wrote into slot B are taken from there, not downloaded again.
func TestApplyDeltaResume(t *testing.T) {
	r1, r2 := twoReleases(t)
	// Release 2's system shares nothing with release 1: everything must come from the
	// network or slot B.
	sk, _ := key(t)
	r2 = makeRelease(t, sk, "2", r2.boot, randBytes(77, 10*mib+99))
	c := newCard(t, r1)

	src := newSource(t, r2.boot, r2.system)
	src.fail = func(n int) error {
		if n > 25 {
			return errCut
		}
		return nil
	}
	rc, st := deviceStream(t, c, r2, src)
	if _, err := apply.Apply(context.Background(), rc, target(t, c)); !errors.Is(err, errCut) {
		t.Fatalf("interrupted install: %v", err)
	}
	first := st.Counts()
	rc.Close()
	if s, err := c.PowerOn(); err != nil || s.Name != "a" {
		t.Fatalf("after the interrupted install the card boots %v, %v", s, err)
	}

	src.fail = nil
	rc, st = deviceStream(t, c, r2, src)
	_, err := apply.Apply(context.Background(), rc, target(t, c))
	must(t, err)
	second := st.Counts()
	t.Logf("first try %+v; second %+v", first, second)
	if second.InPlace < 2*mib || second.Downloaded+second.Reused() != second.Total {
		t.Fatalf("the second try reused %d bytes in place: %+v", second.InPlace, second)
	}
	checkSlotB(t, c, r2)
}
