package grow

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/internal/testutil"
)

// The test layout, in sectors: the image's partitions at 4 MiB boundaries, a 64 MiB data
// partition last, 132 MiB in all.
const (
	mib          = 1 << 20
	testSig      = 0x5eed1e55
	testPARTUUID = "5eed1e55-07"
	layoutEnd    = 132 * mib
)

type testPart struct {
	typ         byte
	start, size uint64 // sectors, absolute
}

var (
	testPrimaries = []testPart{
		{0x0c, 8192, 8192},   // p1 config
		{0x0c, 16384, 16384}, // p2 boot A
		{0x0c, 32768, 16384}, // p3 boot B
	}
	extStart     = uint64(49152)
	testLogicals = []testPart{
		{0x83, 57344, 32768},   // p5 system A
		{0x83, 98304, 32768},   // p6 system B
		{0x83, 139264, 131072}, // p7 data, ends at 132 MiB
	}
)

func putEntry(sector []byte, slot int, status, typ byte, start, size uint64, chsStart, chsEnd uint64) {
	e := sector[entriesOffset+slot*entrySize:]
	e[0], e[4] = status, typ
	s, t := chs(chsStart), chs(chsEnd)
	copy(e[1:4], s[:])
	copy(e[5:8], t[:])
	binary.LittleEndian.PutUint32(e[8:], uint32(start))
	binary.LittleEndian.PutUint32(e[12:], uint32(size))
}

// ebrOf returns where the EBR of logical partition i is: right after the previous logical
// partition (4 MiB before this one) or, with tight, in the sector just before it.
func ebrOf(i int, tight bool) uint64 {
	if tight {
		return testLogicals[i].start - 1
	}
	if i == 0 {
		return extStart
	}
	return testLogicals[i-1].start + testLogicals[i-1].size
}

// writeLayout writes the MBR and the EBR chain of the test layout into f.
func writeLayout(t testing.TB, f io.WriterAt, tight bool) {
	t.Helper()
	mbr := make([]byte, SectorSize)
	binary.LittleEndian.PutUint32(mbr[440:], testSig)
	for i, p := range testPrimaries {
		status := byte(0)
		if i == 0 {
			status = 0x80
		}
		putEntry(mbr, i, status, p.typ, p.start, p.size, p.start, p.start+p.size-1)
	}
	last := testLogicals[len(testLogicals)-1]
	extEnd := last.start + last.size
	putEntry(mbr, 3, 0, 0x0f, extStart, extEnd-extStart, extStart, extEnd-1)
	mbr[510], mbr[511] = 0x55, 0xaa
	writeSector(t, f, 0, mbr)
	if tight {
		// The first EBR must be at the start of the extended partition: make the gap up
		// to partition 5's EBR an empty link.
		first := make([]byte, SectorSize)
		e := ebrOf(0, true)
		putEntry(first, 1, 0, 0x05, e-extStart, testLogicals[0].start+testLogicals[0].size-e, e, testLogicals[0].start+testLogicals[0].size-1)
		first[510], first[511] = 0x55, 0xaa
		writeSector(t, f, extStart, first)
	}
	for i, p := range testLogicals {
		ebr := ebrOf(i, tight)
		b := make([]byte, SectorSize)
		putEntry(b, 0, 0, p.typ, p.start-ebr, p.size, p.start, p.start+p.size-1)
		if i+1 < len(testLogicals) {
			next := ebrOf(i+1, tight)
			n := testLogicals[i+1]
			putEntry(b, 1, 0, 0x05, next-extStart, n.start+n.size-next, next, n.start+n.size-1)
		}
		b[510], b[511] = 0x55, 0xaa
		writeSector(t, f, ebr, b)
	}
}

func writeSector(t testing.TB, f io.WriterAt, n uint64, b []byte) {
	t.Helper()
	if _, err := f.WriteAt(b, int64(n)*SectorSize); err != nil {
		t.Fatal(err)
	}
}

// makeImage writes the test layout into a sparse file of the given size, as if the image had
// been written to a card of that size.
func makeImage(t *testing.T, size int64, tight bool) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "card.img")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(max(size, layoutEnd)); err != nil {
		t.Fatal(err)
	}
	writeLayout(t, f, tight)
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return name
}

// makeSfdiskImage has sfdisk write the test layout, as an independent check of the parser:
// sfdisk puts each EBR 1 MiB before its logical partition.
func makeSfdiskImage(t *testing.T, size int64) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "card.img")
	if err := os.WriteFile(name, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(name, layoutEnd); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("label: dos\nlabel-id: 0x%08x\nunit: sectors\n", testSig)
	for i, p := range testPrimaries {
		script += fmt.Sprintf("start=%d, size=%d, type=%x%s\n", p.start, p.size, p.typ, map[bool]string{true: ", bootable"}[i == 0])
	}
	script += fmt.Sprintf("start=%d, size=%d, type=f\n", extStart, layoutEnd/SectorSize-extStart)
	for _, p := range testLogicals {
		script += fmt.Sprintf("start=%d, size=%d, type=%x\n", p.start, p.size, p.typ)
	}
	cmd := exec.Command(testutil.NeedTool(t, "sfdisk"), "--no-reread", "--no-tell-kernel", name)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	if err := os.Truncate(name, size); err != nil {
		t.Fatal(err)
	}
	return name
}
