package grow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"testing"
)

// sparseDisk is a disk in memory that holds only the sectors written to it; the others read
// as zeros.
type sparseDisk map[int64][]byte

func (d sparseDisk) ReadAt(b []byte, off int64) (int, error) {
	for i := range b {
		o := off + int64(i)
		if s, ok := d[o/SectorSize]; ok {
			b[i] = s[o%SectorSize]
		} else {
			b[i] = 0
		}
	}
	return len(b), nil
}

func (d sparseDisk) WriteAt(b []byte, off int64) (int, error) {
	if off%SectorSize != 0 || len(b)%SectorSize != 0 {
		return 0, errors.New("sparseDisk: not whole sectors")
	}
	for i := 0; i < len(b); i += SectorSize {
		d[(off+int64(i))/SectorSize] = bytes.Clone(b[i : i+SectorSize])
	}
	return len(b), nil
}

// encode and decodeDisk turn a sparse disk into fuzz input and back: records of an 8-byte
// sector number and the sector's 512 bytes.
func (d sparseDisk) encode() []byte {
	var b []byte
	for _, n := range slices.Sorted(maps.Keys(d)) {
		b = binary.LittleEndian.AppendUint64(b, uint64(n))
		b = append(b, d[n]...)
	}
	return b
}

func decodeDisk(b []byte) sparseDisk {
	d := sparseDisk{}
	for ; len(b) >= 8+SectorSize; b = b[8+SectorSize:] {
		d[int64(binary.LittleEndian.Uint64(b)%(1<<54))] = bytes.Clone(b[8 : 8+SectorSize])
	}
	return d
}

func FuzzPlan(f *testing.F) {
	for _, tight := range []bool{false, true} {
		d := sparseDisk{}
		writeLayout(f, d, tight)
		for _, size := range []int64{1 << 30, layoutEnd, 100 * mib, 3 << 40} {
			f.Add(d.encode(), size, 7)
		}
		f.Add(d.encode(), int64(1<<30), 6)
		// an EBR chain that loops
		loop := sparseDisk{}
		for n, s := range d {
			loop[n] = bytes.Clone(s)
		}
		binary.LittleEndian.PutUint32(loop[int64(ebrOf(1, tight))][entriesOffset+entrySize+8:], 0)
		f.Add(loop.encode(), int64(1<<30), 7)
	}
	f.Add([]byte{}, int64(0), 7)
	f.Add([]byte{}, int64(-1), 7)

	f.Fuzz(func(t *testing.T, in []byte, diskSize int64, part int) {
		disk := decodeDisk(in)
		c, err := Plan(disk, diskSize, part)
		if err != nil {
			if c != nil {
				t.Fatalf("a change with an error: %+v, %v", c, err)
			}
			return
		}
		if c == nil {
			return
		}
		if c.Partition != part || len(c.Writes) == 0 || len(c.Writes) > 2 {
			t.Fatalf("change of partition %d with %d writes", c.Partition, len(c.Writes))
		}
		if c.NewSize <= c.OldSize || c.Start <= 0 || c.Start+c.NewSize > diskSize || (c.Start+c.NewSize)%Alignment != 0 {
			t.Fatalf("change from %d: %d -> %d bytes on a %d-byte disk", c.Start, c.OldSize, c.NewSize, diskSize)
		}
		for _, w := range c.Writes {
			if len(w.Data) != SectorSize || w.Offset%SectorSize != 0 || w.Offset < 0 || w.Offset+SectorSize > diskSize {
				t.Fatalf("write of %d bytes at %d on a %d-byte disk", len(w.Data), w.Offset, diskSize)
			}
			if _, err := disk.WriteAt(w.Data, w.Offset); err != nil {
				t.Fatal(err)
			}
		}
		// Once applied, the change is done: planning again finds nothing to do.
		if again, err := Plan(disk, diskSize, part); err != nil || again != nil {
			t.Fatalf("after applying %+v: %+v, %v", c, again, err)
		}
	})
}
