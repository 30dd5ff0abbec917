package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Read parses the MBR partition table of a disk of size bytes, following the EBR chain of
// an extended partition. The input is untrusted: every entry is checked against the disk
// and the extended partition, partitions may not overlap each other or an EBR, and the
// chain must move forward (so it cannot loop) and hold at most 128 logical partitions.
//
// Names are empty (MBR has none). Align is the largest alignment shared by every partition
// start and every EBR (their greatest common divisor), which for a table written from
// Plan is the alignment given to Plan unless the layout happens to be aligned more coarsely.
func Read(r io.ReaderAt, size int64) (*Table, error) {
	if size < SectorSize {
		return nil, fmt.Errorf("disk size %d is smaller than one sector", size)
	}
	sectors := size / SectorSize
	mbr := make([]byte, SectorSize)
	if err := readSector(r, 0, mbr); err != nil {
		return nil, fmt.Errorf("reading MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil, errors.New("no MBR signature 0x55AA in sector 0")
	}
	t := &Table{DiskSignature: binary.LittleEndian.Uint32(mbr[0x1B8:]), Size: sectors * SectorSize}
	var primary []span // sectors of the primary entries (the extended one as a whole)
	var ext *Placed
	for i := range 4 {
		e := parseEntry(mbr[0x1BE+16*i:])
		if e.typ == 0 {
			continue
		}
		if e.start == 0 || e.sectors == 0 || e.start+e.sectors > sectors {
			return nil, fmt.Errorf("partition %d: sectors %d+%d outside the disk of %d sectors", i+1, e.start, e.sectors, sectors)
		}
		p := Placed{Part: Part{Number: i + 1, Type: e.typ, Size: e.sectors * SectorSize}, Start: e.start * SectorSize}
		if IsExtended(e.typ) {
			if ext != nil {
				return nil, fmt.Errorf("partition %d: a second extended partition", i+1)
			}
			ext = &p
		}
		if err := claim(&primary, span{e.start, e.start + e.sectors}, fmt.Sprintf("partition %d", p.Number)); err != nil {
			return nil, err
		}
		t.Parts = append(t.Parts, p)
	}
	starts := []int64{}
	for _, p := range t.Parts {
		starts = append(starts, p.Start)
	}
	if ext != nil {
		logicals, ebrs, err := readChain(r, ext)
		if err != nil {
			return nil, err
		}
		// readChain keeps logicals and EBRs inside the extended partition, which the
		// primaries do not overlap; inside it they must not overlap each other.
		var inside []span
		for i, l := range logicals {
			if err := claim(&inside, span{ebrs[i], ebrs[i] + 1}, fmt.Sprintf("EBR of partition %d", l.Number)); err != nil {
				return nil, err
			}
			if err := claim(&inside, span{l.Start / SectorSize, l.End() / SectorSize}, fmt.Sprintf("partition %d", l.Number)); err != nil {
				return nil, err
			}
			starts = append(starts, l.Start, ebrs[i]*SectorSize)
		}
		t.Parts = append(t.Parts, logicals...)
	}
	var g int64
	for _, s := range starts {
		g = gcd(g, s)
	}
	t.Align = g
	return t, nil
}

// readChain follows the EBR chain of ext and returns the logical partitions and the sector
// of each one's EBR.
func readChain(r io.ReaderAt, ext *Placed) ([]Placed, []int64, error) {
	extStart, extEnd := ext.Start/SectorSize, ext.End()/SectorSize
	var logicals []Placed
	var ebrs []int64
	buf := make([]byte, SectorSize)
	for at := extStart; ; {
		n := 5 + len(logicals)
		if len(logicals) == maxLogicals {
			return nil, nil, fmt.Errorf("extended partition %d: more than %d logical partitions", ext.Number, maxLogicals)
		}
		if err := readSector(r, at, buf); err != nil {
			return nil, nil, fmt.Errorf("reading EBR of partition %d at sector %d: %w", n, at, err)
		}
		if buf[510] != 0x55 || buf[511] != 0xAA {
			return nil, nil, fmt.Errorf("EBR of partition %d at sector %d: no signature 0x55AA", n, at)
		}
		e := parseEntry(buf[0x1BE:])
		link := parseEntry(buf[0x1CE:])
		if e.typ == 0 || IsExtended(e.typ) {
			if len(logicals) == 0 && e.typ == 0 && link.typ == 0 {
				return nil, nil, nil // an empty extended partition
			}
			return nil, nil, fmt.Errorf("EBR of partition %d at sector %d: first entry has type %#02x", n, at, e.typ)
		}
		start := at + e.start
		if e.start == 0 || e.sectors == 0 || start+e.sectors > extEnd {
			return nil, nil, fmt.Errorf("partition %d: sectors %d+%d outside the extended partition (%d-%d)", n, start, e.sectors, extStart, extEnd)
		}
		logicals = append(logicals, Placed{Part: Part{Number: n, Type: e.typ, Size: e.sectors * SectorSize}, Start: start * SectorSize})
		ebrs = append(ebrs, at)
		if link.typ == 0 {
			return logicals, ebrs, nil
		}
		if !IsExtended(link.typ) {
			return nil, nil, fmt.Errorf("EBR of partition %d at sector %d: link has type %#02x", n, at, link.typ)
		}
		next := extStart + link.start
		// Each EBR must come after the partition before it: the chain only moves forward.
		if next < start+e.sectors || next >= extEnd {
			return nil, nil, fmt.Errorf("EBR of partition %d at sector %d: next EBR at sector %d is not after partition %d and inside the extended partition", n, at, next, n)
		}
		at = next
	}
}

type entry struct {
	typ            byte
	start, sectors int64
}

func parseEntry(b []byte) entry {
	return entry{
		typ:     b[4],
		start:   int64(binary.LittleEndian.Uint32(b[8:])),
		sectors: int64(binary.LittleEndian.Uint32(b[12:])),
	}
}

func readSector(r io.ReaderAt, sector int64, buf []byte) error {
	n, err := r.ReadAt(buf, sector*SectorSize)
	if n == len(buf) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// span is a half-open range of sectors.
type span struct{ from, to int64 }

// claim records s for what and fails if it overlaps anything claimed before.
func claim(used *[]span, s span, what string) error {
	for _, u := range *used {
		if s.from < u.to && u.from < s.to {
			return fmt.Errorf("%s overlaps another partition or EBR", what)
		}
	}
	*used = append(*used, s)
	return nil
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
