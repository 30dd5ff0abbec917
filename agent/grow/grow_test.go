package grow

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/internal/testutil"
)

type sfdiskPart struct {
	Node  string `json:"node"`
	Start uint64 `json:"start"`
	Size  uint64 `json:"size"`
	Type  string `json:"type"`
	Boot  bool   `json:"bootable"`
}

// sfdiskTable reads an image's partition table with sfdisk, by partition number.
func sfdiskTable(t *testing.T, image string) map[int]sfdiskPart {
	t.Helper()
	out, err := exec.Command(testutil.NeedTool(t, "sfdisk"), "--json", image).Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", image, err)
	}
	var v struct {
		PartitionTable struct {
			ID         string       `json:"id"`
			Partitions []sfdiskPart `json:"partitions"`
		} `json:"partitiontable"`
	}
	// sfdisk prints notes such as "omitting empty partition (5)" before the JSON.
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("sfdisk --json: %v\n%s", err, out)
	}
	if v.PartitionTable.ID != fmt.Sprintf("0x%08x", testSig) {
		t.Errorf("disk id %s, want 0x%08x", v.PartitionTable.ID, testSig)
	}
	m := map[int]sfdiskPart{}
	for _, p := range v.PartitionTable.Partitions {
		var n int
		if _, err := fmt.Sscanf(strings.TrimPrefix(strings.TrimPrefix(p.Node, image), "p"), "%d", &n); err != nil {
			t.Fatalf("sfdisk node %q: %v", p.Node, err)
		}
		m[n] = p
	}
	return m
}

// sfdiskVerify returns the complaints of sfdisk --verify about an image, if any.
func sfdiskVerify(t *testing.T, image string) []string {
	t.Helper()
	out, err := exec.Command(testutil.NeedTool(t, "sfdisk"), "--verify", image).CombinedOutput()
	var complaints []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		switch {
		case l == image+":", l == "No errors detected.", strings.HasPrefix(l, "Remaining "),
			l == "omitting empty partition (5)": // the tight layout's empty first EBR
		default:
			complaints = append(complaints, l)
		}
	}
	if err != nil {
		complaints = append(complaints, err.Error())
	}
	return complaints
}

func planFile(t *testing.T, image string) (*Change, error) {
	t.Helper()
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return Plan(f, fi.Size(), 7)
}

func applyFile(t *testing.T, image string, c *Change) {
	t.Helper()
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Apply(context.Background(), f, c); err != nil {
		t.Fatal(err)
	}
}

func readAt(t *testing.T, image string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// checkGrown checks that p4 and p7 end at end (bytes) and that every other partition is as
// it was.
func checkGrown(t *testing.T, image string, before map[int]sfdiskPart, end int64) {
	t.Helper()
	after := sfdiskTable(t, image)
	if len(after) != len(before) {
		t.Fatalf("partitions after: %v, before: %v", after, before)
	}
	for n, b := range before {
		a := after[n]
		switch n {
		case 4, 7:
			if a.Start != b.Start || a.Type != b.Type {
				t.Errorf("partition %d moved or changed type: %+v, was %+v", n, a, b)
			}
			if got := int64(a.Start+a.Size) * SectorSize; got != end {
				t.Errorf("partition %d ends at byte %d, want %d", n, got, end)
			}
		default:
			if a != b {
				t.Errorf("partition %d changed: %+v, was %+v", n, a, b)
			}
		}
	}
	if c := sfdiskVerify(t, image); len(c) > 0 {
		t.Errorf("sfdisk --verify: %q", c)
	}
}

func TestPlanApplyGrowsToCardEnd(t *testing.T) {
	own := func(tight bool) func(*testing.T, int64) string {
		return func(t *testing.T, size int64) string { return makeImage(t, size, tight) }
	}
	for _, tc := range []struct {
		name      string
		make      func(*testing.T, int64) string
		ebr7      uint64 // sector of partition 7's EBR
		card, end int64
	}{
		{"1GiB", own(false), ebrOf(2, false), 1 << 30, 1 << 30},
		{"unaligned card", own(false), ebrOf(2, false), 1<<30 + 3*mib + 512 + 7, 1 << 30},
		{"EBRs just before their partitions", own(true), ebrOf(2, true), 1 << 30, 1 << 30},
		{"less than one alignment more", own(false), ebrOf(2, false), layoutEnd + 4*mib + 4096, layoutEnd + 4*mib},
		{"layout written by sfdisk", makeSfdiskImage, testLogicals[2].start - 2048, 1 << 30, 1 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			image := tc.make(t, tc.card)
			before := sfdiskTable(t, image)
			if c := sfdiskVerify(t, image); len(c) > 0 {
				t.Fatalf("the test layout itself: sfdisk --verify: %q", c)
			}
			c, err := planFile(t, image)
			if err != nil {
				t.Fatal(err)
			}
			if c == nil {
				t.Fatal("no change planned for a card bigger than the layout")
			}
			if c.Partition != 7 || c.Container != 4 || c.Start != 139264*SectorSize ||
				c.OldSize != 64*mib || c.NewSize != tc.end-139264*SectorSize {
				t.Errorf("change %d in %d from %d: %d -> %d bytes", c.Partition, c.Container, c.Start, c.OldSize, c.NewSize)
			}
			// The container first, then the data partition; each write changes only the size
			// and end CHS of one entry.
			ebr7 := int64(tc.ebr7) * SectorSize
			if len(c.Writes) != 2 || c.Writes[0].Offset != 0 || c.Writes[1].Offset != ebr7 {
				t.Fatalf("writes at %v, want the MBR then the EBR at %d", offsets(c), ebr7)
			}
			for i, w := range c.Writes {
				old := readAt(t, image, w.Offset, SectorSize)
				slot := []int{3, 0}[i]
				lo, hi := entriesOffset+slot*entrySize, entriesOffset+(slot+1)*entrySize
				if !bytes.Equal(old[:lo], w.Data[:lo]) || !bytes.Equal(old[hi:], w.Data[hi:]) ||
					!bytes.Equal(old[lo:lo+5], w.Data[lo:lo+5]) || !bytes.Equal(old[lo+8:lo+12], w.Data[lo+8:lo+12]) {
					t.Errorf("write %d changes more than the size of entry %d", i, slot+1)
				}
			}

			applyFile(t, image, c)
			checkGrown(t, image, before, tc.end)

			// Idempotent: a second run plans nothing.
			if c, err := planFile(t, image); err != nil || c != nil {
				t.Errorf("second plan: %+v, %v; want nothing to do", c, err)
			}
		})
	}
}

func offsets(c *Change) []int64 {
	var o []int64
	for _, w := range c.Writes {
		o = append(o, w.Offset)
	}
	return o
}

// TestPowerCutBetweenWrites stops after the first write, as a power cut would: the table must
// be valid, and the next run must finish the job with the second write only.
func TestPowerCutBetweenWrites(t *testing.T) {
	image := makeImage(t, 1<<30, false)
	before := sfdiskTable(t, image)
	c, err := planFile(t, image)
	if err != nil || c == nil || len(c.Writes) != 2 {
		t.Fatalf("plan: %+v, %v", c, err)
	}
	first := *c
	first.Writes = c.Writes[:1]
	applyFile(t, image, &first)
	if complaints := sfdiskVerify(t, image); len(complaints) > 0 {
		t.Fatalf("after the first write alone: sfdisk --verify: %q", complaints)
	}
	p := sfdiskTable(t, image)
	if p[4].Start+p[4].Size != 1<<30/SectorSize || p[7] != before[7] {
		t.Fatalf("after the first write: p4 %+v, p7 %+v", p[4], p[7])
	}

	again, err := planFile(t, image)
	if err != nil || again == nil {
		t.Fatalf("plan after the cut: %+v, %v", again, err)
	}
	if len(again.Writes) != 1 || again.Writes[0].Offset != c.Writes[1].Offset || !bytes.Equal(again.Writes[0].Data, c.Writes[1].Data) {
		t.Fatalf("plan after the cut writes at %v, want only the EBR write", offsets(again))
	}
	applyFile(t, image, again)
	checkGrown(t, image, before, 1<<30)
}

// TestWrongOrderLeavesBadTable shows why the extended partition grows first: the data
// partition's write alone leaves it past the end of its container, which sfdisk reports.
func TestWrongOrderLeavesBadTable(t *testing.T) {
	image := makeImage(t, 1<<30, false)
	c, err := planFile(t, image)
	if err != nil || c == nil || len(c.Writes) != 2 {
		t.Fatalf("plan: %+v, %v", c, err)
	}
	second := *c
	second.Writes = c.Writes[1:]
	applyFile(t, image, &second)
	complaints := sfdiskVerify(t, image)
	if len(complaints) == 0 {
		t.Error("sfdisk --verify finds nothing wrong with partition 7 outside partition 4")
	}
	t.Logf("sfdisk --verify: %q", complaints)
}

func TestPlanCardTooSmall(t *testing.T) {
	for _, size := range []int64{layoutEnd - SectorSize, 100 * mib, mib, 4096, 0} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			image := makeImage(t, size, false)
			c, err := planFile(t, image)
			if !errors.Is(err, ErrCardTooSmall) {
				t.Fatalf("plan on a %d-byte card: %+v, %v; want ErrCardTooSmall", size, c, err)
			}
			if size < SectorSize {
				return
			}
			want := fmt.Sprintf("the card has %d bytes (%s) but the image's layout needs %d (132.0 MiB): write the image to a card of at least %d bytes (132.0 MiB)", size, human(size), layoutEnd, layoutEnd)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message %q\nwant it to say %q", err, want)
			}
		})
	}
}

func TestPlanNothingToDo(t *testing.T) {
	for _, size := range []int64{layoutEnd, layoutEnd + 512, layoutEnd + 4*mib - 512} {
		image := makeImage(t, size, false)
		if c, err := planFile(t, image); err != nil || c != nil {
			t.Errorf("card of %d bytes: %+v, %v; want nothing to do", size, c, err)
		}
	}
}

func TestPlanRefuses(t *testing.T) {
	image := makeImage(t, 1<<30, false)
	sector := func(n uint64) []byte { return readAt(t, image, int64(n)*SectorSize, SectorSize) }
	mbr, ebr6 := sector(0), sector(ebrOf(1, false))
	for _, tc := range []struct {
		name string
		part int
		edit func(mbr, ebr6 []byte)
		want string
	}{
		{"not the last partition", 6, nil, "partition 7 (sectors 139264 to 270336) does not end before data partition 6"},
		{"no such partition", 9, nil, "no partition 9"},
		{"the extended partition", 4, nil, "is an extended partition"},
		{"no MBR signature", 7, func(m, _ []byte) { m[511] = 0 }, "no MBR signature"},
		{"GPT", 7, func(m, _ []byte) { m[entriesOffset+4] = 0xee }, "GPT"},
		{"bad boot flag", 7, func(m, _ []byte) { m[entriesOffset] = 0x12 }, "boot flag"},
		{"EBR chain loop", 7, func(_, e []byte) {
			// partition 6's link points back to partition 5's EBR
			binary.LittleEndian.PutUint32(e[entriesOffset+entrySize+8:], 0)
		}, "loops back"},
		{"EBR link outside the extended partition", 7, func(_, e []byte) {
			binary.LittleEndian.PutUint32(e[entriesOffset+entrySize+8:], 1<<30)
		}, "outside extended partition 4"},
		{"logical partition outside the extended partition", 7, func(m, _ []byte) {
			binary.LittleEndian.PutUint32(m[entriesOffset+3*entrySize+12:], 100000)
		}, "is not inside extended partition 4"},
		{"a primary after the data partition", 7, func(m, _ []byte) {
			copy(m[entriesOffset+2*entrySize:], m[entriesOffset:entriesOffset+entrySize])
			binary.LittleEndian.PutUint32(m[entriesOffset+2*entrySize+8:], 300000)
		}, "partition 3 (sectors 300000 to 308192) does not end before data partition 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, e := bytes.Clone(mbr), bytes.Clone(ebr6)
			if tc.edit != nil {
				tc.edit(m, e)
			}
			disk := &patched{base: image, t: t, sectors: map[int64][]byte{0: m, int64(ebrOf(1, false)) * SectorSize: e}}
			c, err := Plan(disk, 1<<30, tc.part)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("plan: %+v, %v; want an error saying %q", c, err, tc.want)
			}
		})
	}
}

// patched reads an image with some sectors replaced.
type patched struct {
	t       *testing.T
	base    string
	sectors map[int64][]byte
}

func (p *patched) ReadAt(b []byte, off int64) (int, error) {
	if s, ok := p.sectors[off]; ok && len(b) == SectorSize {
		return copy(b, s), nil
	}
	f, err := os.Open(p.base)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(b, off)
}

func TestApplyNilIsNoop(t *testing.T) {
	if err := Apply(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestApplyRefusesPartialSector(t *testing.T) {
	image := makeImage(t, 1<<30, false)
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = Apply(context.Background(), f, &Change{Partition: 7, Writes: []Write{{Offset: 100, Data: make([]byte, SectorSize)}}})
	if err == nil {
		t.Fatal("a write at a non-sector offset was accepted")
	}
}

func TestHuman(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 132 * mib: "132.0 MiB", 1 << 40: "1.0 TiB"} {
		if got := human(n); got != want {
			t.Errorf("human(%d) = %q, want %q", n, got, want)
		}
	}
}
