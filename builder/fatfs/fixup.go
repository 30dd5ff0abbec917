package fatfs

import (
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"time"
)

// Corrections to what go-diskfs v1.9.4 writes, made directly on the bytes:
//
//   - the boot sector (and its backup at sector 6) gets our volume ID in little-endian
//     order (go-diskfs writes 0 when reproducible and stores serials big-endian), the
//     label, the partition offset as hidden sectors and a 255-head, 63-sector geometry;
//   - every directory entry gets the epoch as its times (go-diskfs uses the clock);
//   - a subdirectory's ".." entry points at cluster 0 when its parent is the root (go-diskfs
//     writes the root's cluster, 2, which fsck.vfat reports as "Invalid '..' entry");
//   - an empty file gets no cluster (go-diskfs allocates one: "File size is 0 bytes,
//     cluster chain length is > 0 bytes");
//   - duplicate short names in a directory get numeric tails (go-diskfs only adds them
//     for stems longer than eight characters, so "a.html" and "a.htmx" both become
//     A.HTM: "Duplicate directory entry");
//   - the FS information sector (and its backup at sector 7) gets the real free cluster
//     count and next free cluster (go-diskfs leaves them unknown).

type rw interface {
	io.ReaderAt
	io.WriterAt
}

func fixup(w rw, l layout, o Options, off int64) error {
	bs := make([]byte, sectorSize)
	if _, err := w.ReadAt(bs, 0); err != nil {
		return fmt.Errorf("reading the boot sector: %w", err)
	}
	if bs[510] != 0x55 || bs[511] != 0xAA || binary.LittleEndian.Uint16(bs[11:]) != sectorSize ||
		int64(bs[13]) != l.sectorsPerCluster || int64(binary.LittleEndian.Uint32(bs[0x24:])) != l.sectorsPerFAT {
		return fmt.Errorf("boot sector does not match the expected layout")
	}
	binary.LittleEndian.PutUint16(bs[0x18:], 63)  // sectors per track
	binary.LittleEndian.PutUint16(bs[0x1A:], 255) // heads
	binary.LittleEndian.PutUint32(bs[0x1C:], uint32(off/sectorSize))
	binary.LittleEndian.PutUint32(bs[0x43:], o.VolumeID)
	copy(bs[0x47:0x52], fmt.Sprintf("%-11s", o.Label))
	for _, sector := range []int64{0, 6} {
		if _, err := w.WriteAt(bs, sector*sectorSize); err != nil {
			return fmt.Errorf("writing boot sector %d: %w", sector, err)
		}
	}

	fatBytes := make([]byte, l.sectorsPerFAT*sectorSize)
	if _, err := w.ReadAt(fatBytes, reservedSectors*sectorSize); err != nil {
		return fmt.Errorf("reading the FAT: %w", err)
	}
	fx := &fixer{w: w, l: l, fat: fatBytes, visited: map[uint32]bool{}}
	fx.date, fx.time = fatTime(o.Epoch)
	rootCluster := binary.LittleEndian.Uint32(bs[0x2C:])
	if err := fx.dir(rootCluster, 0, "/", true); err != nil {
		return err
	}
	for i := range int64(2) {
		if _, err := w.WriteAt(fatBytes, (reservedSectors+i*l.sectorsPerFAT)*sectorSize); err != nil {
			return fmt.Errorf("writing FAT %d: %w", i+1, err)
		}
	}

	free, next := uint32(0), uint32(0xFFFFFFFF)
	for c := uint32(2); c < uint32(l.clusters)+2; c++ {
		if fx.entry(c) == 0 {
			free++
			next = min(next, c)
		}
	}
	info := make([]byte, sectorSize)
	if _, err := w.ReadAt(info, sectorSize); err != nil {
		return fmt.Errorf("reading the FS information sector: %w", err)
	}
	if string(info[0:4]) != "RRaA" || string(info[484:488]) != "rrAa" {
		return fmt.Errorf("FS information sector has no signature")
	}
	binary.LittleEndian.PutUint32(info[488:], free)
	binary.LittleEndian.PutUint32(info[492:], next)
	for _, sector := range []int64{1, 7} {
		if _, err := w.WriteAt(info, sector*sectorSize); err != nil {
			return fmt.Errorf("writing FS information sector %d: %w", sector, err)
		}
	}
	return nil
}

type fixer struct {
	w          rw
	l          layout
	fat        []byte
	visited    map[uint32]bool
	date, time uint16
}

func (fx *fixer) entry(c uint32) uint32 {
	return binary.LittleEndian.Uint32(fx.fat[4*c:]) & 0x0FFFFFFF
}

func (fx *fixer) setEntry(c, v uint32) { binary.LittleEndian.PutUint32(fx.fat[4*c:], v) }

func (fx *fixer) validCluster(c uint32) bool { return c >= 2 && int64(c) < fx.l.clusters+2 }

// chain returns the clusters of the chain starting at c.
func (fx *fixer) chain(c uint32, what string) ([]uint32, error) {
	var out []uint32
	for {
		if !fx.validCluster(c) || int64(len(out)) > fx.l.clusters {
			return nil, fmt.Errorf("%s: broken cluster chain at %d", what, c)
		}
		out = append(out, c)
		next := fx.entry(c)
		if next >= 0x0FFFFFF8 {
			return out, nil
		}
		c = next
	}
}

func (fx *fixer) clusterOffset(c uint32) int64 {
	return fx.l.dataStart() + int64(c-2)*fx.l.clusterSize()
}

// dir corrects the directory at cluster c (path p) whose parent directory is at cluster
// parent (0 for the root), then its subdirectories.
func (fx *fixer) dir(c, parent uint32, p string, isRoot bool) error {
	if fx.visited[c] {
		return fmt.Errorf("directory %s: cluster %d is used twice", p, c)
	}
	fx.visited[c] = true
	clusters, err := fx.chain(c, p)
	if err != nil {
		return err
	}
	cs := fx.l.clusterSize()
	b := make([]byte, int64(len(clusters))*cs)
	for i, cl := range clusters {
		if _, err := fx.w.ReadAt(b[int64(i)*cs:int64(i+1)*cs], fx.clusterOffset(cl)); err != nil {
			return fmt.Errorf("reading directory %s: %w", p, err)
		}
	}
	type sub struct {
		cluster uint32
		name    string
	}
	var subs []sub
	// taken holds every short name of the directory, so that a new tail clashes with
	// none, seen the ones passed so far, so that the second of a pair is renamed.
	taken, seen := map[string]bool{}, map[string]bool{}
	for i := 0; i+32 <= len(b) && b[i] != 0; i += 32 {
		if b[i] != 0xE5 && b[i+11]&0x3F != 0x0F {
			taken[string(b[i:i+11])] = true
		}
	}
	lfnStart := -1 // first long-name entry before the current short entry
	for i := 0; i+32 <= len(b); i += 32 {
		e := b[i : i+32]
		if e[0] == 0x00 {
			break
		}
		if e[0] == 0xE5 {
			lfnStart = -1
			continue
		}
		attr := e[11]
		if attr&0x3F == 0x0F {
			if lfnStart < 0 {
				lfnStart = i
			}
			continue
		}
		binary.LittleEndian.PutUint16(e[0x0E:], fx.time) // created
		binary.LittleEndian.PutUint16(e[0x10:], fx.date)
		e[0x0D] = 0
		binary.LittleEndian.PutUint16(e[0x12:], fx.date) // accessed
		binary.LittleEndian.PutUint16(e[0x16:], fx.time) // modified
		binary.LittleEndian.PutUint16(e[0x18:], fx.date)
		name := string(e[0:11])
		lfn := lfnStart
		lfnStart = -1
		switch {
		case attr&0x08 != 0: // the volume label
			continue
		case name == ".          ":
			setCluster(e, c)
			continue
		case name == "..         ":
			setCluster(e, parent)
			continue
		}
		if seen[name] {
			if lfn < 0 {
				return fmt.Errorf("directory %s: short name %q given twice", p, strings.TrimSpace(name))
			}
			name = uniqueShort(name, taken)
			taken[name] = true
			copy(e[0:11], name)
			sum := shortChecksum(e[0:11])
			for j := lfn; j < i; j += 32 {
				b[j+13] = sum
			}
		}
		seen[name] = true
		cl := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
		if attr&0x10 != 0 {
			subs = append(subs, sub{cl, strings.TrimSpace(name)})
			continue
		}
		if binary.LittleEndian.Uint32(e[28:]) == 0 && cl != 0 {
			chain, err := fx.chain(cl, p+strings.TrimSpace(name))
			if err != nil {
				return err
			}
			for _, x := range chain {
				fx.setEntry(x, 0)
			}
			setCluster(e, 0)
		}
	}
	for i, cl := range clusters {
		if _, err := fx.w.WriteAt(b[int64(i)*cs:int64(i+1)*cs], fx.clusterOffset(cl)); err != nil {
			return fmt.Errorf("writing directory %s: %w", p, err)
		}
	}
	self := c
	if isRoot {
		self = 0 // ".." of the root's children is cluster 0
	}
	for _, s := range subs {
		if err := fx.dir(s.cluster, self, p+s.name+"/", false); err != nil {
			return err
		}
	}
	return nil
}

func setCluster(e []byte, c uint32) {
	binary.LittleEndian.PutUint16(e[20:], uint16(c>>16))
	binary.LittleEndian.PutUint16(e[26:], uint16(c))
}

// uniqueShort gives an 11-byte short name a numeric tail ("STEM~N") not in taken.
func uniqueShort(name string, taken map[string]bool) string {
	stem, ext := strings.TrimRight(name[:8], " "), name[8:]
	if i := strings.IndexByte(stem, '~'); i > 0 {
		stem = stem[:i]
	}
	for n := 1; ; n++ {
		tail := fmt.Sprintf("~%d", n)
		s := stem
		if len(s) > 8-len(tail) {
			s = s[:8-len(tail)]
		}
		if candidate := fmt.Sprintf("%-8s", s+tail) + ext; !taken[candidate] {
			return candidate
		}
	}
}

// shortChecksum is the checksum long-name entries carry of their short name.
func shortChecksum(name []byte) byte {
	var sum byte
	for _, c := range name[:11] {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	return sum
}

// fatTime encodes t's UTC wall clock as FAT date and time, clamped to 1980-2107.
func fatTime(t time.Time) (date, tm uint16) {
	t = t.UTC()
	if lo := time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC); t.Before(lo) {
		t = lo
	}
	if hi := time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC); t.After(hi) {
		t = hi
	}
	date = uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	tm = uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	return date, tm
}
