package disk

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// SectorSize is the logical sector size of every table this package writes or reads.
const SectorSize = 512

// Partition type bytes used by the Raspberry Pi layout.
const (
	TypeFAT32LBA    byte = 0x0c // FAT32 with LBA addressing
	TypeExtendedLBA byte = 0x0f // extended partition, LBA
	TypeExtended    byte = 0x05 // extended partition (CHS); used for EBR chain links
	TypeLinux       byte = 0x83 // Linux native
)

// maxLogicals bounds the EBR chain Read follows, so a looping or absurdly long chain in
// untrusted input cannot run away.
const maxLogicals = 128

// Part is a partition as asked for: its number (1-4 primary, 5 and up logical), MBR type
// byte, size in bytes (a positive multiple of 512) and a name that only the caller uses
// (MBR has no partition names; Read returns them empty).
type Part struct {
	Number int
	Type   byte
	Size   int64
	Name   string
}

// Placed is a partition with its start on the disk in bytes.
type Placed struct {
	Part
	Start int64
}

// End returns the byte offset just past the partition.
func (p Placed) End() int64 { return p.Start + p.Size }

// Table is an MBR partition table. Parts are sorted by Number and include the extended
// partition when there are logical partitions.
type Table struct {
	// DiskSignature is written at 0x1B8; Linux names partitions PARTUUID=<sig>-<nn>.
	DiskSignature uint32
	// Align is the alignment in bytes of every partition start and every EBR.
	Align int64
	// Parts are the partitions, sorted by Number.
	Parts []Placed
	// Size is the total disk size in bytes, a multiple of Align.
	Size int64
}

// IsExtended reports whether t is an extended partition type (0x05, 0x0f or 0x85).
func IsExtended(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

// Part returns the partition numbered n, or nil.
func (t *Table) Part(n int) *Placed {
	for i := range t.Parts {
		if t.Parts[i].Number == n {
			return &t.Parts[i]
		}
	}
	return nil
}

// Plan lays out parts on a disk. Primary partitions (numbers 1-4, contiguous from 1) come
// first in number order; when there are logical partitions (numbers 5 and up, contiguous
// from 5) an extended partition of type 0x0f is added in the primary slot after the last
// primary (slot 4 when there are three primaries) and covers the rest of the disk.
//
// Every partition start is a multiple of align (a positive multiple of 512; 4 MiB suits SD
// cards). The first partition starts at align, leaving the MBR alone in the first aligned
// block. Each logical partition is preceded by its EBR: the EBR sits on an aligned boundary
// and the logical partition starts one align later, so logical starts stay aligned at the
// cost of one align per logical partition (the first EBR is the extended partition's first
// sector). The disk size is the end of the last partition rounded up to align.
func Plan(parts []Part, align int64) (*Table, error) {
	if align <= 0 || align%SectorSize != 0 {
		return nil, fmt.Errorf("alignment %d is not a positive multiple of %d", align, SectorSize)
	}
	if align > 1<<30 {
		return nil, fmt.Errorf("alignment %d is larger than 1 GiB", align)
	}
	sorted := slices.Clone(parts)
	slices.SortFunc(sorted, func(a, b Part) int { return a.Number - b.Number })
	var primaries, logicals []Part
	for _, p := range sorted {
		switch {
		case p.Number < 1:
			return nil, fmt.Errorf("partition %q: number %d is not 1 or more", p.Name, p.Number)
		case p.Size <= 0 || p.Size%SectorSize != 0:
			return nil, fmt.Errorf("partition %d (%s): size %d is not a positive multiple of %d", p.Number, p.Name, p.Size, SectorSize)
		case p.Type == 0:
			return nil, fmt.Errorf("partition %d (%s): type 0 marks an empty entry", p.Number, p.Name)
		case IsExtended(p.Type):
			return nil, fmt.Errorf("partition %d (%s): type %#02x is extended; the extended partition is created automatically", p.Number, p.Name, p.Type)
		case p.Number <= 4:
			if want := len(primaries) + 1; p.Number != want {
				return nil, fmt.Errorf("partition %d (%s): primary partitions must be numbered 1, 2, … without gaps or repeats (expected %d)", p.Number, p.Name, want)
			}
			primaries = append(primaries, p)
		default:
			if want := len(logicals) + 5; p.Number != want {
				return nil, fmt.Errorf("partition %d (%s): logical partitions must be numbered 5, 6, … without gaps or repeats (expected %d)", p.Number, p.Name, want)
			}
			logicals = append(logicals, p)
		}
	}
	if len(primaries) == 0 && len(logicals) == 0 {
		return nil, errors.New("no partitions to plan")
	}
	if len(logicals) > 0 && len(primaries) > 3 {
		return nil, fmt.Errorf("%d primary partitions leave no slot for the extended partition holding %d logical partitions", len(primaries), len(logicals))
	}
	if len(logicals) > maxLogicals {
		return nil, fmt.Errorf("%d logical partitions, at most %d supported", len(logicals), maxLogicals)
	}

	t := &Table{Align: align}
	cursor := align
	for _, p := range primaries {
		start := alignUp(cursor, align)
		t.Parts = append(t.Parts, Placed{Part: p, Start: start})
		cursor = start + p.Size
	}
	if len(logicals) > 0 {
		extStart := alignUp(cursor, align)
		ebr := extStart
		var logicalParts []Placed
		for _, p := range logicals {
			start := ebr + align
			logicalParts = append(logicalParts, Placed{Part: p, Start: start})
			ebr = alignUp(start+p.Size, align)
		}
		end := ebr // aligned end of the last logical
		t.Parts = append(t.Parts, Placed{
			Part:  Part{Number: len(primaries) + 1, Type: TypeExtendedLBA, Size: end - extStart},
			Start: extStart,
		})
		t.Parts = append(t.Parts, logicalParts...)
		cursor = end
	}
	t.Size = alignUp(cursor, align)
	if t.Size/SectorSize > 1<<32-1 {
		return nil, fmt.Errorf("disk size %d is beyond what MBR can address (2 TiB)", t.Size)
	}
	return t, nil
}

func alignUp(v, a int64) int64 { return (v + a - 1) / a * a }

// extended returns the extended partition, or nil.
func (t *Table) extended() *Placed {
	for i := range t.Parts {
		if t.Parts[i].Number <= 4 && IsExtended(t.Parts[i].Type) {
			return &t.Parts[i]
		}
	}
	return nil
}

// logicals returns the logical partitions in number order.
func (t *Table) logicals() []Placed {
	var l []Placed
	for _, p := range t.Parts {
		if p.Number >= 5 {
			l = append(l, p)
		}
	}
	return l
}

// Write writes the MBR (empty boot code, the disk signature, four entries, 0x55AA), zeroes
// the sector after it (so no stale GPT header survives) and writes the EBR chain: each EBR
// holds its logical partition relative to itself and a link (type 0x05) to the next EBR
// relative to the extended partition's start.
func (t *Table) Write(w io.WriterAt) error {
	if err := t.validate(); err != nil {
		return err
	}
	mbr := make([]byte, SectorSize)
	binary.LittleEndian.PutUint32(mbr[0x1B8:], t.DiskSignature)
	for _, p := range t.Parts {
		if p.Number > 4 {
			continue
		}
		putEntry(mbr[0x1BE+16*(p.Number-1):], p.Type, p.Start/SectorSize, p.Size/SectorSize, p.Start/SectorSize)
	}
	mbr[510], mbr[511] = 0x55, 0xAA
	if _, err := w.WriteAt(mbr, 0); err != nil {
		return fmt.Errorf("writing MBR: %w", err)
	}
	if _, err := w.WriteAt(make([]byte, SectorSize), SectorSize); err != nil {
		return fmt.Errorf("clearing sector 1: %w", err)
	}
	ext := t.extended()
	if ext == nil {
		return nil
	}
	logicals := t.logicals()
	ebrAt := func(i int) int64 {
		if i == 0 {
			return ext.Start
		}
		return t.ebrOffset(logicals[i])
	}
	for i, l := range logicals {
		ebr := make([]byte, SectorSize)
		at := ebrAt(i)
		putEntry(ebr[0x1BE:], l.Type, (l.Start-at)/SectorSize, l.Size/SectorSize, l.Start/SectorSize)
		if i+1 < len(logicals) {
			next, nl := ebrAt(i+1), logicals[i+1]
			putEntry(ebr[0x1CE:], TypeExtended, (next-ext.Start)/SectorSize, (nl.End()-next)/SectorSize, next/SectorSize)
		}
		ebr[510], ebr[511] = 0x55, 0xAA
		if _, err := w.WriteAt(ebr, at); err != nil {
			return fmt.Errorf("writing EBR of partition %d: %w", l.Number, err)
		}
	}
	return nil
}

// ebrOffset is where the EBR of a logical partition other than the first goes: one Align
// before it when that is a multiple of Align, else the sector before it.
func (t *Table) ebrOffset(l Placed) int64 {
	if t.Align >= SectorSize && l.Start%t.Align == 0 && l.Start-t.Align > 0 {
		return l.Start - t.Align
	}
	return l.Start - SectorSize
}

// validate checks a table before it is written: numbering, sector multiples, bounds,
// overlaps, and that each EBR fits before its logical partition inside the extended one.
func (t *Table) validate() error {
	if t.Size <= 0 || t.Size%SectorSize != 0 || t.Size/SectorSize > 1<<32-1 {
		return fmt.Errorf("disk size %d is not a positive multiple of %d within 2 TiB", t.Size, SectorSize)
	}
	var ext *Placed
	seen := map[int]bool{}
	for i := range t.Parts {
		p := &t.Parts[i]
		if seen[p.Number] || p.Number < 1 {
			return fmt.Errorf("partition number %d is invalid or repeated", p.Number)
		}
		seen[p.Number] = true
		if p.Start <= 0 || p.Size <= 0 || p.Start%SectorSize != 0 || p.Size%SectorSize != 0 {
			return fmt.Errorf("partition %d: start %d or size %d is not a positive multiple of %d", p.Number, p.Start, p.Size, SectorSize)
		}
		if p.End() > t.Size {
			return fmt.Errorf("partition %d ends at %d, past the disk size %d", p.Number, p.End(), t.Size)
		}
		if p.Type == 0 {
			return fmt.Errorf("partition %d: type 0 marks an empty entry", p.Number)
		}
		if IsExtended(p.Type) {
			if p.Number > 4 || ext != nil {
				return fmt.Errorf("partition %d: only one primary extended partition is allowed", p.Number)
			}
			ext = p
		}
	}
	logicals := t.logicals()
	if len(logicals) > 0 && ext == nil {
		return errors.New("logical partitions without an extended partition")
	}
	for i, l := range logicals {
		if l.Number != 5+i {
			return fmt.Errorf("logical partitions must be numbered 5, 6, … in start order; found %d", l.Number)
		}
		ebr := ext.Start
		if i > 0 {
			ebr = t.ebrOffset(l)
			if prev := logicals[i-1]; ebr < prev.End() {
				return fmt.Errorf("partition %d: no room for its EBR after partition %d", l.Number, prev.Number)
			}
		}
		if l.Start <= ebr || l.End() > ext.End() {
			return fmt.Errorf("partition %d lies outside the extended partition %d", l.Number, ext.Number)
		}
	}
	for i, a := range t.Parts {
		for _, b := range t.Parts[i+1:] {
			if a.Number >= 5 && b.Number <= 4 && IsExtended(b.Type) || b.Number >= 5 && a.Number <= 4 && IsExtended(a.Type) {
				continue
			}
			if a.Start < b.End() && b.Start < a.End() {
				return fmt.Errorf("partitions %d and %d overlap", a.Number, b.Number)
			}
		}
	}
	return nil
}

// putEntry fills a 16-byte partition entry; chsLBA is the absolute sector used for the CHS
// fields (relative starts in EBRs still get absolute CHS values).
func putEntry(b []byte, typ byte, start, sectors, chsLBA int64) {
	b[0] = 0x00 // not active: the Raspberry Pi firmware does not look at the boot flag
	copy(b[1:4], chs(chsLBA))
	b[4] = typ
	copy(b[5:8], chs(chsLBA+sectors-1))
	binary.LittleEndian.PutUint32(b[8:], uint32(start))
	binary.LittleEndian.PutUint32(b[12:], uint32(sectors))
}

// chs encodes an absolute sector as cylinder/head/sector for the conventional 255-head,
// 63-sector geometry; sectors past cylinder 1023 get the usual 1023/254/63 (FE FF FF).
func chs(lba int64) []byte {
	const heads, spt = 255, 63
	c := lba / (heads * spt)
	h := (lba / spt) % heads
	s := lba%spt + 1
	if c > 1023 {
		c, h, s = 1023, 254, 63
	}
	return []byte{byte(h), byte(s) | byte(c>>2)&0xC0, byte(c)}
}

// DiskSignature derives a stable, non-zero disk signature from inputs: the first four bytes
// (big-endian) of the SHA-256 of the length-prefixed inputs.
func DiskSignature(inputs ...string) uint32 {
	h := sha256.New()
	for _, in := range inputs {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(in)))
		h.Write(n[:])
		h.Write([]byte(in))
	}
	sum := h.Sum(nil)
	for i := 0; i+4 <= len(sum); i += 4 {
		if v := binary.BigEndian.Uint32(sum[i:]); v != 0 {
			return v
		}
	}
	return 1
}

// PartUUID returns Linux's PARTUUID of partition n on an MBR disk with signature sig.
func PartUUID(sig uint32, n int) string { return fmt.Sprintf("%08x-%02x", sig, n) }
