package otatest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/edgeimg/edgeimg/hw/filecard"
	"github.com/edgeimg/edgeimg/hw/rpi4"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// MiB is a mebibyte.
const MiB = 1 << 20

// Extents returns the synthetic card's partitions: 1 (config), 2/3 (boot A/B), 5/6
// (system A/B). Each call returns a new map.
func Extents() map[int]filecard.Extent {
	return map[int]filecard.Extent{
		1: {Start: 1 * MiB, Size: 1 * MiB},
		2: {Start: 2 * MiB, Size: 1 * MiB},
		3: {Start: 3 * MiB, Size: 1 * MiB},
		5: {Start: 4 * MiB, Size: 4 * MiB},
		6: {Start: 8 * MiB, Size: 4 * MiB},
	}
}

// CardSize is the size of the card image NewCard writes.
const CardSize = 12 * MiB

const (
	// CmdA is slot A's cmdline.txt.
	CmdA = "console=tty1 root=PARTUUID=0badcafe-05 rootfstype=ext4 ro rootwait panic=10\n"
	// CmdB is slot B's cmdline.txt, as long as CmdA.
	CmdB = "console=tty1 root=PARTUUID=0badcafe-06 rootfstype=ext4 ro rootwait panic=10\n"
	// CmdOff is where cmdline.txt is in the boot parts FakeFAT makes, unless a test says
	// otherwise: beyond the first 64 KiB that ota/apply holds back.
	CmdOff = 100000
)

// RandBytes returns n deterministic pseudo-random bytes; the same seed gives the same bytes.
func RandBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// FakeFAT returns a boot partition image of size bytes: a FAT-looking boot sector,
// RandBytes(seed) after it, and slot A's cmdline.txt (CmdA) at cmdOff.
func FakeFAT(seed uint64, size, cmdOff int) []byte {
	b := RandBytes(seed, size)
	clear(b[:512])
	copy(b[3:], "mkfs.fat")
	copy(b[82:], "FAT32   ")
	b[510], b[511] = 0x55, 0xaa
	copy(b[cmdOff:], CmdA)
	return b
}

// slotA is release 1's boot and system partitions, made once.
var slotA = sync.OnceValues(func() ([]byte, []byte) {
	return FakeFAT(1, 200<<10, CmdOff), RandBytes(2, 3*MiB)
})

// SlotA returns copies of release 1's boot and system partitions, which NewCard writes to
// slot A.
func SlotA() (boot, system []byte) {
	b, s := slotA()
	return bytes.Clone(b), bytes.Clone(s)
}

// NewCard writes a card image in a new temporary directory and opens it as a simulated
// card: autoboot.txt in partition 1 booting slot A (boot partition 2) with slot B
// (partition 3) for trials, slot A's boot and system partitions holding release 1 (SlotA),
// slot B empty. The card's firmware state is in the directory's "firmware".
func NewCard(t testing.TB) *filecard.Card {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "card.img")
	ext := Extents()
	boot, system := slotA()
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(CardSize))
	_, err = f.WriteAt(rpi4.Autoboot(2, 3), ext[1].Start+8*512)
	must(t, err)
	_, err = f.WriteAt(boot, ext[2].Start)
	must(t, err)
	_, err = f.WriteAt(system, ext[5].Start)
	must(t, err)
	must(t, f.Close())
	c, err := filecard.New(img, ext, filepath.Join(dir, "firmware"))
	must(t, err)
	return c
}

// detRand is a deterministic random source: seed, seed+1, ...
type detRand byte

func (d *detRand) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(*d)
		*d++
	}
	return len(b), nil
}

// Key returns a signing key pair made deterministically from seed, parsed as the bundle
// package reads keys.
func Key(t testing.TB, seed byte) (ed25519.PrivateKey, ed25519.PublicKey) {
	t.Helper()
	r := detRand(seed)
	priv, pub, err := bundle.GenerateKey(&r)
	must(t, err)
	sk, err := bundle.ParsePrivateKey(priv)
	must(t, err)
	pk, err := bundle.ParsePublicKey(pub)
	must(t, err)
	return sk, pk
}

// Manifest is the manifest of release version of the "demo" image for the Pi 4, layout 1,
// installable over any version.
func Manifest(version string) bundle.Manifest {
	return bundle.Manifest{Name: "demo", Version: version, Board: "rpi4", LayoutVersion: 1, MinVersion: "0"}
}

// Source is a bundle part named name holding b.
func Source(name string, b []byte) bundle.Source {
	return bundle.Source{Name: name, Size: int64(len(b)), Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
}

// Release is an OTA release: its manifest, its boot part with slot A's cmdline.txt at
// CmdOff, and its system part.
type Release struct {
	Manifest bundle.Manifest
	Boot     []byte
	CmdOff   int
	System   []byte
}

// Sources returns the release's parts for bundle.Write: the boot part, patched with each
// slot's cmdline.txt at CmdOff, and the system part.
func (r Release) Sources() []bundle.Source {
	bs := Source(bundle.PartBoot, r.Boot)
	bs.Patch = &bundle.Patch{Offset: int64(r.CmdOff), From: "a", Slots: map[string]string{"a": CmdA, "b": CmdB}}
	return []bundle.Source{bs, Source(bundle.PartSystem, r.System)}
}

// Bundle returns the release's bundle signed with sk.
func (r Release) Bundle(t testing.TB, sk ed25519.PrivateKey) []byte {
	t.Helper()
	var buf bytes.Buffer
	_, err := bundle.Write(&buf, r.Manifest, sk, r.Sources())
	must(t, err)
	return buf.Bytes()
}

// PartSum returns the SHA-256 of card partition n.
func PartSum(t testing.TB, c *filecard.Card, n int) [32]byte {
	t.Helper()
	p, err := c.Partition(n)
	must(t, err)
	defer p.Close()
	b := make([]byte, p.Size())
	_, err = p.ReadAt(b, 0)
	must(t, err)
	return sha256.Sum256(b)
}

// PartBytes returns the first size bytes of card partition n.
func PartBytes(t testing.TB, c *filecard.Card, n, size int) []byte {
	t.Helper()
	p, err := c.Partition(n)
	must(t, err)
	defer p.Close()
	b := make([]byte, size)
	_, err = p.ReadAt(b, 0)
	must(t, err)
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
