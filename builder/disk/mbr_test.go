package disk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/internal/testutil"
)

const (
	mib   = 1 << 20
	align = 4 * mib
)

// piParts is the Raspberry Pi 4 A/B layout with small system and data partitions.
func piParts() []Part {
	return []Part{
		{Number: 1, Type: TypeFAT32LBA, Size: 64 * mib, Name: "config"},
		{Number: 2, Type: TypeFAT32LBA, Size: 256 * mib, Name: "boot-a"},
		{Number: 3, Type: TypeFAT32LBA, Size: 256 * mib, Name: "boot-b"},
		{Number: 5, Type: TypeLinux, Size: 300 * mib, Name: "system-a"},
		{Number: 6, Type: TypeLinux, Size: 300*mib + 512, Name: "system-b"},
		{Number: 7, Type: TypeLinux, Size: 32 * mib, Name: "data"},
	}
}

func writeImage(t *testing.T, tab *Table) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(tab.Size); err != nil {
		t.Fatal(err)
	}
	if err := tab.Write(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return img
}

func TestPlanPiLayout(t *testing.T) {
	tab, err := Plan(piParts(), align)
	if err != nil {
		t.Fatal(err)
	}
	// Expected starts in MiB: primaries back to back from 4 MiB, the extended partition
	// after them, each logical one align after its (aligned) EBR.
	want := []struct {
		n           int
		typ         byte
		start, size int64
	}{
		{1, 0x0c, 4 * mib, 64 * mib},
		{2, 0x0c, 68 * mib, 256 * mib},
		{3, 0x0c, 324 * mib, 256 * mib},
		{4, 0x0f, 580 * mib, (1228 - 580) * mib},
		{5, 0x83, 584 * mib, 300 * mib},
		{6, 0x83, 888 * mib, 300*mib + 512},
		{7, 0x83, 1196 * mib, 32 * mib},
	}
	if len(tab.Parts) != len(want) {
		t.Fatalf("got %d partitions, want %d: %+v", len(tab.Parts), len(want), tab.Parts)
	}
	for i, w := range want {
		p := tab.Parts[i]
		if p.Number != w.n || p.Type != w.typ || p.Start != w.start || p.Size != w.size {
			t.Errorf("partition %d: got number %d type %#x start %d size %d, want %d %#x %d %d",
				i, p.Number, p.Type, p.Start, p.Size, w.n, w.typ, w.start, w.size)
		}
		if p.Start%align != 0 {
			t.Errorf("partition %d starts at %d, not aligned to %d", p.Number, p.Start, align)
		}
	}
	if tab.Size != 1228*mib || tab.Size%align != 0 {
		t.Errorf("disk size %d, want %d", tab.Size, 1228*mib)
	}
	if tab.Part(7).Name != "data" || tab.Part(9) != nil {
		t.Errorf("Part lookup wrong")
	}
}

func TestPlanRejects(t *testing.T) {
	ok := Part{Number: 1, Type: 0x83, Size: mib}
	cases := map[string]struct {
		parts []Part
		align int64
	}{
		"no parts":          {nil, align},
		"zero align":        {[]Part{ok}, 0},
		"odd align":         {[]Part{ok}, 1000},
		"zero size":         {[]Part{{Number: 1, Type: 0x83}}, align},
		"odd size":          {[]Part{{Number: 1, Type: 0x83, Size: 1000}}, align},
		"gap in primaries":  {[]Part{ok, {Number: 3, Type: 0x83, Size: mib}}, align},
		"repeat":            {[]Part{ok, ok}, align},
		"gap in logicals":   {[]Part{ok, {Number: 6, Type: 0x83, Size: mib}}, align},
		"four and logicals": {[]Part{ok, {Number: 2, Type: 1, Size: mib}, {Number: 3, Type: 1, Size: mib}, {Number: 4, Type: 1, Size: mib}, {Number: 5, Type: 1, Size: mib}}, align},
		"extended given":    {[]Part{ok, {Number: 2, Type: 0x0f, Size: mib}}, align},
		"type zero":         {[]Part{{Number: 1, Size: mib}}, align},
		"number zero":       {[]Part{{Number: 0, Type: 0x83, Size: mib}}, align},
		"too big":           {[]Part{{Number: 1, Type: 0x83, Size: 3 << 40}}, align},
	}
	for name, c := range cases {
		if tab, err := Plan(c.parts, c.align); err == nil {
			t.Errorf("%s: Plan accepted %+v", name, tab)
		}
	}
}

func TestPlanPrimariesOnly(t *testing.T) {
	tab, err := Plan([]Part{
		{Number: 2, Type: 0x83, Size: 10 * mib},
		{Number: 1, Type: 0x0c, Size: 3*mib + 512},
	}, mib)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Parts) != 2 || tab.Parts[0].Start != mib || tab.Parts[1].Start != 5*mib || tab.Size != 15*mib {
		t.Fatalf("unexpected plan %+v", tab)
	}
	img := writeImage(t, tab)
	if tab2 := readImage(t, img, tab.Size); !reflect.DeepEqual(withoutNames(tab), tab2) {
		t.Fatalf("read back %+v, want %+v", tab2, tab)
	}
}

func readImage(t *testing.T, img string, size int64) *Table {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := Read(f, size)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func withoutNames(t *Table) *Table {
	c := *t
	c.Parts = append([]Placed(nil), t.Parts...)
	for i := range c.Parts {
		c.Parts[i].Name = ""
	}
	return &c
}

type sfdiskJSON struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		Unit       string `json:"unit"`
		SectorSize int    `json:"sectorsize"`
		Partitions []struct {
			Node  string `json:"node"`
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func TestWriteSfdisk(t *testing.T) {
	tab, err := Plan(piParts(), align)
	if err != nil {
		t.Fatal(err)
	}
	tab.DiskSignature = DiskSignature("test", "rpi4")
	img := writeImage(t, tab)

	var got sfdiskJSON
	out := testutil.Run(t, "sfdisk", "--json", img)
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("parsing sfdisk --json: %v\n%s", err, out)
	}
	pt := got.PartitionTable
	if pt.Label != "dos" || pt.ID != fmt.Sprintf("0x%08x", tab.DiskSignature) || pt.Unit != "sectors" {
		t.Errorf("sfdisk: label %q id %q unit %q, want dos 0x%08x sectors", pt.Label, pt.ID, pt.Unit, tab.DiskSignature)
	}
	if len(pt.Partitions) != 7 {
		t.Fatalf("sfdisk sees %d partitions, want 7:\n%s", len(pt.Partitions), out)
	}
	for i, p := range pt.Partitions {
		w := tab.Parts[i]
		if p.Node != fmt.Sprintf("%s%d", img, w.Number) || p.Start*512 != w.Start || p.Size*512 != w.Size || p.Type != fmt.Sprintf("%x", w.Type) {
			t.Errorf("sfdisk partition %+v, want %+v", p, w)
		}
	}

	// sfdisk checks its reading of the table; any complaint fails the test.
	for _, args := range [][]string{{"--verify", img}, {"-d", img}, {"--list", img}} {
		cmd := exec.Command(testutil.NeedTool(t, "sfdisk"), args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("sfdisk %v: %v\n%s%s", args, err, stdout.String(), stderr.String())
		}
		all := strings.ToLower(stdout.String() + stderr.String())
		if args[0] == "--verify" {
			if !strings.Contains(all, "no errors detected") {
				t.Errorf("sfdisk --verify:\n%s%s", stdout.String(), stderr.String())
			}
			all = strings.ReplaceAll(all, "no errors detected", "")
		}
		for _, bad := range []string{"warn", "error", "overlap", "does not start", "not aligned", "inconsisten", "cross"} {
			if strings.Contains(all, bad) {
				t.Errorf("sfdisk %v mentions %q:\n%s%s", args, bad, stdout.String(), stderr.String())
			}
		}
		if args[0] == "-d" && !strings.Contains(stdout.String(), fmt.Sprintf("label-id: 0x%08x", tab.DiskSignature)) {
			t.Errorf("sfdisk -d has no label-id 0x%08x:\n%s", tab.DiskSignature, stdout.String())
		}
	}

	// blkid reads the disk signature as the partition table UUID.
	out = testutil.Run(t, "blkid", "-p", "-o", "export", img)
	if !strings.Contains(out, "PTUUID="+fmt.Sprintf("%08x", tab.DiskSignature)) || !strings.Contains(out, "PTTYPE=dos") {
		t.Errorf("blkid -p:\n%s", out)
	}

	// Read gives back what was written (names are not stored in an MBR).
	if back := readImage(t, img, tab.Size); !reflect.DeepEqual(withoutNames(tab), back) {
		t.Errorf("Read after Write:\n got %+v\nwant %+v", back, withoutNames(tab))
	}
}

func TestWriteBytes(t *testing.T) {
	tab, err := Plan(piParts(), align)
	if err != nil {
		t.Fatal(err)
	}
	tab.DiskSignature = 0x11223344
	raw := &memDisk{sparse: map[int64][]byte{}}
	if err := tab.Write(raw); err != nil {
		t.Fatal(err)
	}
	// MBR, sector 1 and one EBR per logical partition: nothing else.
	if len(raw.sparse) != 5 {
		t.Errorf("Write wrote %d sectors, want 5", len(raw.sparse))
	}
	raw.b = raw.at(0)
	if !bytes.Equal(raw.b[0x1B8:0x1BC], []byte{0x44, 0x33, 0x22, 0x11}) {
		t.Errorf("disk signature bytes % x", raw.b[0x1B8:0x1BC])
	}
	if !bytes.Equal(raw.b[:0x1B8], make([]byte, 0x1B8)) {
		t.Errorf("boot code is not zero")
	}
	if raw.b[510] != 0x55 || raw.b[511] != 0xAA {
		t.Errorf("no boot signature")
	}
	// Entry 4: extended, LBA type; CHS beyond 8 GB-style values only past cylinder 1023.
	e4 := raw.b[0x1BE+48 : 0x1BE+64]
	if e4[4] != 0x0f {
		t.Errorf("entry 4 type %#x", e4[4])
	}
	// Partition 1 starts at sector 8192 = C0 H130 S3 with 255/63 geometry.
	if e1 := raw.b[0x1BE : 0x1BE+16]; !bytes.Equal(e1[1:4], []byte{130, 3, 0}) {
		t.Errorf("partition 1 start CHS % x", e1[1:4])
	}
	// The EBR of partition 6 sits one align before it and links to the EBR of 7.
	p6 := tab.Part(6)
	ebr := raw.at(p6.Start - align)
	if ebr[510] != 0x55 || ebr[511] != 0xAA || ebr[0x1BE+4] != 0x83 || ebr[0x1CE+4] != 0x05 {
		t.Errorf("EBR of partition 6: % x", ebr[0x1BE:])
	}
	if got := chs(20 << 20); !bytes.Equal(got, []byte{0xFE, 0xFF, 0xFF}) {
		t.Errorf("CHS past cylinder 1023: % x", got)
	}
	// The last EBR has no link.
	p7 := tab.Part(7)
	if last := raw.at(p7.Start - align); !bytes.Equal(last[0x1CE:0x1DE], make([]byte, 16)) {
		t.Errorf("last EBR links on: % x", last[0x1CE:0x1DE])
	}
}

// miniParts is the Pi layout shrunk to kilobytes, aligned to 64 KiB.
func miniParts() ([]Part, int64) {
	return []Part{
		{Number: 1, Type: TypeFAT32LBA, Size: 64 << 10},
		{Number: 2, Type: TypeFAT32LBA, Size: 128 << 10},
		{Number: 3, Type: TypeFAT32LBA, Size: 128 << 10},
		{Number: 5, Type: TypeLinux, Size: 256 << 10},
		{Number: 6, Type: TypeLinux, Size: 100 << 10},
		{Number: 7, Type: TypeLinux, Size: 64 << 10},
	}, 64 << 10
}

func TestReadRejects(t *testing.T) {
	parts, al := miniParts()
	tab, err := Plan(parts, al)
	if err != nil {
		t.Fatal(err)
	}
	disk := &memDisk{b: make([]byte, tab.Size)}
	if err := tab.Write(disk); err != nil {
		t.Fatal(err)
	}
	good := disk.b
	if back, err := Read(bytes.NewReader(good), tab.Size); err != nil || !reflect.DeepEqual(back, tab) {
		t.Fatalf("Read of the intact table: %v\n got %+v\nwant %+v", err, back, tab)
	}
	p5, p6 := tab.Part(5), tab.Part(6)
	ebr6 := p6.Start - al
	ext := tab.Part(4)
	put32 := func(b []byte, off int64, v uint32) {
		b[off], b[off+1], b[off+2], b[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	cases := map[string]func(b []byte){
		"no signature":       func(b []byte) { b[511] = 0 },
		"past the disk":      func(b []byte) { put32(b, 0x1BE+12, uint32(tab.Size/512)) },
		"overlapping":        func(b []byte) { put32(b, 0x1BE+16+8, uint32(tab.Part(1).Start/512+8)) },
		"start zero":         func(b []byte) { put32(b, 0x1BE+8, 0) },
		"two extended":       func(b []byte) { b[0x1BE+4] = 0x05 },
		"EBR loop":           func(b []byte) { put32(b, ebr6+0x1CE+8, 0) },
		"EBR backwards":      func(b []byte) { put32(b, ebr6+0x1CE+8, uint32((p5.Start-ext.Start)/512)) },
		"EBR past extended":  func(b []byte) { put32(b, ebr6+0x1CE+8, uint32(ext.Size/512)) },
		"logical outside":    func(b []byte) { put32(b, ebr6+0x1BE+12, uint32(ext.Size/512)) },
		"EBR no signature":   func(b []byte) { b[ebr6+511] = 0 },
		"EBR extended first": func(b []byte) { b[ebr6+0x1BE+4] = 0x05 },
		"logical over EBR":   func(b []byte) { put32(b, ext.Start+0x1BE+12, uint32((ebr6-p5.Start)/512+1)) },
	}
	for name, corrupt := range cases {
		b := bytes.Clone(good)
		corrupt(b)
		if got, err := Read(bytes.NewReader(b), int64(len(b))); err == nil {
			t.Errorf("%s: Read accepted %+v", name, got)
		}
	}
	if _, err := Read(bytes.NewReader(good[:100]), 100); err == nil {
		t.Errorf("Read accepted 100 bytes")
	}
	if _, err := Read(bytes.NewReader(good[:p5.Start-al]), tab.Size); err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Read of a truncated image: %v", err)
	}
}

func TestDiskSignature(t *testing.T) {
	a := DiskSignature("fleet", "device-1")
	if a != DiskSignature("fleet", "device-1") || a == 0 {
		t.Fatalf("signature %08x not stable or zero", a)
	}
	if a == DiskSignature("fleetdevice-1") || a == DiskSignature("fleet", "device-2") {
		t.Errorf("signatures collide")
	}
	if got := PartUUID(0x0badcafe, 7); got != "0badcafe-07" {
		t.Errorf("PartUUID = %s", got)
	}
}

func FuzzRead(f *testing.F) {
	// Seeds are kept to a few KiB so the fuzzer mutates the table, not acres of zeros.
	for _, al := range []int64{512, 1024} {
		seed, err := Plan([]Part{
			{Number: 1, Type: 0x0c, Size: 1024},
			{Number: 2, Type: 0x0c, Size: 512},
			{Number: 3, Type: 0x0c, Size: 512},
			{Number: 5, Type: 0x83, Size: 1024},
			{Number: 6, Type: 0x83, Size: 512},
			{Number: 7, Type: 0x83, Size: 1536},
		}, al)
		if err != nil {
			f.Fatal(err)
		}
		buf := &memDisk{}
		if err := seed.Write(buf); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.b, seed.Size)
	}
	f.Add(make([]byte, 512), int64(512))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		tab, err := Read(bytes.NewReader(b), size)
		if err != nil {
			return
		}
		// Whatever Read accepts lies on the disk, and only the extended partition
		// overlaps anything: it holds the logical partitions.
		var ext *Placed
		for i, p := range tab.Parts {
			if p.Start <= 0 || p.Size <= 0 || p.End() > tab.Size {
				t.Fatalf("accepted partition %+v outside disk of %d", p, tab.Size)
			}
			if IsExtended(p.Type) && p.Number <= 4 {
				ext = &tab.Parts[i]
			}
			for _, q := range tab.Parts[i+1:] {
				if p.Start < q.End() && q.Start < p.End() && !IsExtended(p.Type) && !IsExtended(q.Type) {
					t.Fatalf("accepted overlapping partitions %+v and %+v", p, q)
				}
			}
		}
		for _, p := range tab.Parts {
			if p.Number >= 5 && (ext == nil || p.Start <= ext.Start || p.End() > ext.End()) {
				t.Fatalf("accepted logical partition %+v outside the extended one %+v", p, ext)
			}
		}
	})
}

// memDisk is a growing in-memory io.WriterAt; with sparse set it records whole sectors
// by offset instead.
type memDisk struct {
	b      []byte
	sparse map[int64][]byte
}

func (m *memDisk) at(off int64) []byte { return m.sparse[off] }

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if m.sparse != nil {
		if off%512 != 0 || len(p) != 512 {
			return 0, fmt.Errorf("write of %d bytes at %d is not one sector", len(p), off)
		}
		m.sparse[off] = bytes.Clone(p)
		return len(p), nil
	}
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}
