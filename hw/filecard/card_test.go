package filecard

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeimg/edgeimg/hw"
	"github.com/edgeimg/edgeimg/hw/rpi4"
)

const mib = 1 << 20

var extents = map[int]Extent{
	1: {Start: 1 * mib, Size: 1 * mib},
	2: {Start: 2 * mib, Size: 1 * mib},
	3: {Start: 3 * mib, Size: 1 * mib},
	5: {Start: 4 * mib, Size: 1 * mib},
	6: {Start: 5 * mib, Size: 1 * mib},
}

func bootSector() []byte {
	b := make([]byte, 512)
	copy(b[82:], "FAT32   ")
	b[510], b[511] = 0x55, 0xaa
	return b
}

// newCard makes a card whose slots both hold a bootable boot partition, booting def.
func newCard(t *testing.T, def, try int) *Card {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "card.img")
	f, err := os.Create(img)
	must(t, err)
	defer f.Close()
	must(t, f.Truncate(6*mib))
	_, err = f.WriteAt(rpi4.Autoboot(def, try), extents[1].Start+4096)
	must(t, err)
	for _, n := range []int{2, 3} {
		_, err = f.WriteAt(bootSector(), extents[n].Start)
		must(t, err)
	}
	c, err := New(img, extents, filepath.Join(dir, "state"))
	must(t, err)
	return c
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var errPowerCut = errors.New("power cut")

// torn is autoboot.txt on a card that loses power during a write: only the first n bytes of
// the write reach the card.
type torn struct {
	rpi4.SectorFile
	n int
}

func (t *torn) WriteAt(b []byte, off int64) (int, error) {
	if t.n >= len(b) {
		return t.SectorFile.WriteAt(b, off)
	}
	if _, err := t.SectorFile.WriteAt(b[:t.n], off); err != nil {
		return 0, err
	}
	return t.n, errPowerCut
}

// TestCommitPowerCut cuts power during the commit after every possible number of bytes of
// the new autoboot.txt has reached the card (the prefix of the new sector over the old), in
// both directions. After each, the firmware boots the old or the new slot, normally and on a
// trial boot, and autoboot.txt is still 512 bytes that parse.
func TestCommitPowerCut(t *testing.T) {
	slots := (&rpi4.Board{}).Slots()
	for _, dir := range []struct{ old, new hw.Slot }{{slots[0], slots[1]}, {slots[1], slots[0]}} {
		c := newCard(t, dir.old.Boot, dir.new.Boot)
		for n := 0; n <= rpi4.AutobootSize; n++ {
			// Back to the old state, the device booted normally from the old slot.
			f, err := os.OpenFile(c.Image, os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteAt(rpi4.Autoboot(dir.old.Boot, dir.new.Boot), c.AutobootOffset)
			must(t, err)
			must(t, f.Close())
			if s, err := c.PowerOn(); err != nil || s.Name != dir.old.Name {
				t.Fatalf("reset: %v %v", s, err)
			}
			c.WrapAutoboot = func(f rpi4.SectorFile) rpi4.SectorFile { return &torn{f, n} }
			err = c.Switch().Commit(dir.new)
			if n < rpi4.AutobootSize && !errors.Is(err, errPowerCut) {
				t.Fatalf("cut after %d bytes: commit returned %v", n, err)
			}
			ab, err := c.Autoboot()
			must(t, err)
			if len(ab) != rpi4.AutobootSize {
				t.Fatal("autoboot.txt changed size")
			}
			want := map[string]bool{dir.old.Name: true, dir.new.Name: true}
			booted, err := c.PowerOn()
			if err != nil || !want[booted.Name] {
				t.Fatalf("%s→%s cut after %d bytes: boots %v, %v", dir.old.Name, dir.new.Name, n, booted, err)
			}
			if n == rpi4.AutobootSize && booted.Name != dir.new.Name {
				t.Fatalf("a complete commit boots %s", booted.Name)
			}
			if n == 0 && booted.Name != dir.old.Name {
				t.Fatalf("a commit that wrote nothing boots %s", booted.Name)
			}
			must(t, c.Switch().TryReboot(context.Background()))
			if tb, err := c.PowerOn(); err != nil || !want[tb.Name] {
				t.Fatalf("cut after %d bytes: trial boot %v, %v", n, tb, err)
			}
		}
	}
}

// TestAutobootMixes parses every byte-wise mix of the old and new autoboot.txt — not only
// prefixes, for a card that programs a sector's bytes in any order — and finds the default
// always one of the two slots. The two versions differ only in the two boot_partition digits.
func TestAutobootMixes(t *testing.T) {
	old, nw := rpi4.Autoboot(2, 3), rpi4.Autoboot(3, 2)
	var diff []int
	for i := range old {
		if old[i] != nw[i] {
			diff = append(diff, i)
		}
	}
	if len(diff) != 2 {
		t.Fatalf("old and new autoboot.txt differ in %d bytes, want the 2 digits", len(diff))
	}
	for mask := 0; mask < 1<<len(diff); mask++ {
		mix := bytes.Clone(old)
		for j, i := range diff {
			if mask&(1<<j) != 0 {
				mix[i] = nw[i]
			}
		}
		def, try, ok := rpi4.ParseAutoboot(mix)
		if !ok || (def != 2 && def != 3) || (try != 2 && try != 3) {
			t.Errorf("mix %b: default %d, trial %d, ok %v", mask, def, try, ok)
		}
	}
	// Every prefix of new over old, as TestCommitPowerCut writes it.
	for n := 0; n <= len(old); n++ {
		mix := append(bytes.Clone(nw[:n]), old[n:]...)
		if def, _, ok := rpi4.ParseAutoboot(mix); !ok || (def != 2 && def != 3) {
			t.Errorf("prefix %d: default %d ok %v", n, def, ok)
		}
	}
}

func TestFirmwareBoot(t *testing.T) {
	for _, c := range []struct {
		text     string
		try      bool
		want     int
		wantOK   bool
		scenario string
	}{
		{string(rpi4.Autoboot(2, 3)), false, 2, true, "default"},
		{string(rpi4.Autoboot(2, 3)), true, 3, true, "trial"},
		{"[all]\ntryboot_a_b=1\nboot_partition=2\n[none]\nboot_partition=9\n", false, 2, true, "other filter ignored"},
		{"[all]\nboot_partition=2\n", false, 2, false, "no tryboot_a_b"},
		{"[all]\ntryboot_a_b=1\n", false, 0, false, "no partition"},
		{"garbage\x00\xff\n[all\nboot_partition=x\ntryboot_a_b=1\nboot_partition=3\r\n", false, 3, true, "junk lines"},
	} {
		got, ok := rpi4.FirmwareBoot([]byte(c.text), c.try)
		if got != c.want || ok != c.wantOK {
			t.Errorf("%s: %d %v, want %d %v", c.scenario, got, ok, c.want, c.wantOK)
		}
	}
}

func TestSwitchCells(t *testing.T) {
	c := newCard(t, 2, 3)
	sw := c.Switch()
	a, err := sw.Active()
	must(t, err)
	in, err := sw.Inactive()
	must(t, err)
	if a.Name != "a" || in.Name != "b" {
		t.Fatalf("active %v inactive %v", a, in)
	}
	if err := sw.SetTrial(a); err == nil {
		t.Error("SetTrial accepted the default slot")
	}
	must(t, os.WriteFile(filepath.Join(c.Dir, "bootloader", "partition"), []byte("2"), 0o644))
	if _, err := sw.Active(); err == nil {
		t.Error("a text partition cell was accepted")
	}
	must(t, os.WriteFile(filepath.Join(c.Dir, "bootloader", "partition"), []byte{0, 0, 0, 7}, 0o644))
	if _, err := sw.Active(); err == nil {
		t.Error("partition 7 accepted as a slot")
	}
}
