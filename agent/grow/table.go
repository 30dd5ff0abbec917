package grow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// SectorSize is the size in bytes of the sectors the partition table counts in.
const SectorSize = 512

// Alignment is the boundary, in bytes, the grown data partition ends on: the card's size is
// rounded down to it, like every partition boundary of the image's layout.
const Alignment = 4 << 20

const (
	alignSectors = Alignment / SectorSize
	// maxLogical bounds the walk along the EBR chain; Linux itself stops at 256 partitions.
	maxLogical = 256
	// entriesOffset is where the four 16-byte partition entries start in an MBR or an EBR.
	entriesOffset = 446
	entrySize     = 16
	// maxSectors is the largest start or size an MBR entry can hold (32 bits of sectors).
	maxSectors = 1<<32 - 1
)

// partition is one partition of the MBR layout as Linux numbers it: primaries 1 to 4 by their
// slot, logical partitions from 5 in the order of the EBR chain.
type partition struct {
	number   int
	typ      byte
	start    uint64 // absolute, in sectors
	size     uint64 // in sectors
	extended bool
	// tableSector is the sector holding the entry (0 for a primary, its EBR for a logical) and
	// slot the entry's index in it.
	tableSector uint64
	slot        int
}

func (p partition) end() uint64 { return p.start + p.size }

type entry struct {
	status, typ byte
	start, size uint32
}

func parseEntry(sector []byte, slot int) entry {
	b := sector[entriesOffset+slot*entrySize:]
	return entry{
		status: b[0],
		typ:    b[4],
		start:  binary.LittleEndian.Uint32(b[8:]),
		size:   binary.LittleEndian.Uint32(b[12:]),
	}
}

func isExtended(typ byte) bool { return typ == 0x05 || typ == 0x0f || typ == 0x85 }

func hasSignature(sector []byte) bool { return sector[510] == 0x55 && sector[511] == 0xaa }

// readSector reads sector n of a disk of the given number of sectors.
func readSector(disk io.ReaderAt, sectors, n uint64) ([]byte, error) {
	if n >= sectors {
		return nil, fmt.Errorf("sector %d is beyond the end of the disk (%d sectors)", n, sectors)
	}
	b := make([]byte, SectorSize)
	if _, err := disk.ReadAt(b, int64(n)*SectorSize); err != nil {
		return nil, fmt.Errorf("reading sector %d: %w", n, err)
	}
	return b, nil
}

// readPrimaries parses the MBR in sector 0 and returns its partitions, the extended one included.
func readPrimaries(mbr []byte) ([]partition, error) {
	if !hasSignature(mbr) {
		return nil, errors.New("sector 0 has no MBR signature (0x55 0xaa)")
	}
	var parts []partition
	extended := 0
	for slot := range 4 {
		e := parseEntry(mbr, slot)
		if e.status != 0 && e.status != 0x80 {
			return nil, fmt.Errorf("MBR entry %d has an invalid boot flag %#02x", slot+1, e.status)
		}
		if e.size == 0 {
			continue // Linux ignores entries without a size, whatever their type
		}
		if e.typ == 0xee {
			return nil, errors.New("the disk has a GPT (protective MBR entry of type 0xee), not the image's MBR layout")
		}
		if e.start == 0 {
			return nil, fmt.Errorf("partition %d starts at sector 0, over the MBR", slot+1)
		}
		p := partition{number: slot + 1, typ: e.typ, start: uint64(e.start), size: uint64(e.size), extended: isExtended(e.typ), slot: slot}
		if p.extended {
			if extended++; extended > 1 {
				return nil, errors.New("the MBR has more than one extended partition")
			}
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// readLogicals walks the EBR chain of the extended partition ext. The walk is bounded and
// refuses loops and links that leave the extended partition, so a corrupt or hostile table
// cannot keep it going.
func readLogicals(disk io.ReaderAt, sectors uint64, ext partition) ([]partition, error) {
	var parts []partition
	seen := map[uint64]bool{}
	number := 5
	for ebr := ext.start; ; {
		if len(seen) >= maxLogical {
			return nil, fmt.Errorf("the EBR chain of partition %d is longer than %d", ext.number, maxLogical)
		}
		if seen[ebr] {
			return nil, fmt.Errorf("the EBR chain of partition %d loops back to sector %d", ext.number, ebr)
		}
		seen[ebr] = true
		if ebr < ext.start || ebr >= ext.end() {
			return nil, fmt.Errorf("an EBR at sector %d lies outside extended partition %d (sectors %d to %d)", ebr, ext.number, ext.start, ext.end())
		}
		b, err := readSector(disk, sectors, ebr)
		if err != nil {
			return nil, fmt.Errorf("reading the EBR of partition %d: %w", number, err)
		}
		if !hasSignature(b) {
			return parts, nil // like Linux: an EBR without a signature ends the chain
		}
		next := uint64(0)
		for slot := range 4 {
			e := parseEntry(b, slot)
			if e.size == 0 {
				continue
			}
			if isExtended(e.typ) {
				if next == 0 {
					next = ext.start + uint64(e.start)
				}
				continue
			}
			if slot >= 2 {
				// Linux counts these only when they look sane; the image never has them.
				return nil, fmt.Errorf("the EBR at sector %d has a partition in its entry %d; only entries 1 and 2 are supported", ebr, slot+1)
			}
			p := partition{number: number, typ: e.typ, start: ebr + uint64(e.start), size: uint64(e.size), tableSector: ebr, slot: slot}
			if e.start == 0 {
				return nil, fmt.Errorf("partition %d starts on its own EBR (sector %d)", number, ebr)
			}
			if p.start < ext.start || p.end() > ext.end() {
				return nil, fmt.Errorf("partition %d (sectors %d to %d) is not inside extended partition %d (sectors %d to %d)", number, p.start, p.end(), ext.number, ext.start, ext.end())
			}
			parts = append(parts, p)
			number++
		}
		if next == 0 {
			return parts, nil
		}
		ebr = next
	}
}

// chs encodes a sector address the way MBR entries do, with the customary geometry of 255 heads
// and 63 sectors per track; addresses past cylinder 1023 get the usual 1023/254/63 marker.
func chs(lba uint64) [3]byte {
	const heads, perTrack = 255, 63
	c, h, s := lba/(heads*perTrack), (lba/perTrack)%heads, lba%perTrack+1
	if c > 1023 {
		c, h, s = 1023, 254, 63
	}
	return [3]byte{byte(h), byte(s) | byte(c>>8&3)<<6, byte(c)}
}

// resized returns a copy of sector with the entry in slot given a new size (and end CHS).
func resized(sector []byte, slot int, start, size uint64) []byte {
	b := append([]byte(nil), sector...)
	e := b[entriesOffset+slot*entrySize:]
	end := chs(start + size - 1)
	copy(e[5:8], end[:])
	binary.LittleEndian.PutUint32(e[12:], uint32(size))
	return b
}
