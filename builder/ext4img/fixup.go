package ext4img

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"
)

// Superblock fields (offsets inside the 1024-byte superblock) and feature bits used here.
const (
	sbOffset = 1024
	sbSize   = 1024

	sbInodesCount     = 0x00
	sbBlocksCountLo   = 0x04
	sbFreeInodesCount = 0x10
	sbFirstDataBlock  = 0x14
	sbLogBlockSize    = 0x18
	sbBlocksPerGroup  = 0x20
	sbInodesPerGroup  = 0x28
	sbWtime           = 0x30
	sbMaxMntCount     = 0x36
	sbMagic           = 0x38
	sbLastcheck       = 0x40
	sbRevLevel        = 0x4C
	sbInodeSize       = 0x58
	sbFeatureCompat   = 0x5C
	sbFeatureIncompat = 0x60
	sbFeatureRoCompat = 0x64
	sbUUID            = 0x68
	sbVolumeName      = 0x78
	sbHashSeed        = 0xEC
	sbDefHashVersion  = 0xFC
	sbDescSize        = 0xFE
	sbMkfsTime        = 0x108
	sbBlocksCountHi   = 0x150
	sbLpfIno          = 0x268
	sbWtimeHi         = 0x274
	sbMkfsTimeHi      = 0x276
	sbLastcheckHi     = 0x277

	compatDirIndex      = 0x20
	incompat64Bit       = 0x80
	incompatMetaBg      = 0x10
	incompatInlineData  = 0x8000
	roCompatGdtCsum     = 0x10
	roCompatBigalloc    = 0x200
	roCompatMetadataCsu = 0x400
	roCompatReadonly    = 0x1000

	hashHalfMD4 = 1
)

// Inode fields used here.
const (
	inMode        = 0x00
	inAtime       = 0x08
	inCtime       = 0x0C
	inMtime       = 0x10
	inFileACL     = 0x68
	inFileACLHi   = 0x76
	inExtraIsize  = 0x80
	inCtimeExtra  = 0x84
	inMtimeExtra  = 0x88
	inAtimeExtra  = 0x8C
	inCrtime      = 0x90
	inCrtimeExtra = 0x94

	rootIno = 2
)

// superblock is the part of an ext4 superblock the fix-ups need.
type superblock struct {
	raw            []byte
	blockSize      int64
	blocks         uint64
	firstDataBlock uint64
	blocksPerGroup uint64
	inodesPerGroup uint32
	inodesCount    uint32
	freeInodes     uint32
	inodeSize      int64
	descSize       int64
	groups         uint64
	lpfIno         uint32
}

func parseSuperblock(raw []byte) (*superblock, error) {
	if len(raw) < sbSize {
		return nil, errors.New("superblock: short read")
	}
	le := binary.LittleEndian
	if m := le.Uint16(raw[sbMagic:]); m != 0xEF53 {
		return nil, fmt.Errorf("superblock: bad magic %#04x", m)
	}
	if rev := le.Uint32(raw[sbRevLevel:]); rev != 1 {
		return nil, fmt.Errorf("superblock: revision %d, want 1 (dynamic)", rev)
	}
	lbs := le.Uint32(raw[sbLogBlockSize:])
	if lbs > 6 {
		return nil, fmt.Errorf("superblock: log block size %d", lbs)
	}
	sb := &superblock{
		raw:            raw,
		blockSize:      1024 << lbs,
		blocks:         uint64(le.Uint32(raw[sbBlocksCountLo:])),
		firstDataBlock: uint64(le.Uint32(raw[sbFirstDataBlock:])),
		blocksPerGroup: uint64(le.Uint32(raw[sbBlocksPerGroup:])),
		inodesPerGroup: le.Uint32(raw[sbInodesPerGroup:]),
		inodesCount:    le.Uint32(raw[sbInodesCount:]),
		freeInodes:     le.Uint32(raw[sbFreeInodesCount:]),
		inodeSize:      int64(le.Uint16(raw[sbInodeSize:])),
		descSize:       32,
		lpfIno:         le.Uint32(raw[sbLpfIno:]),
	}
	incompat := le.Uint32(raw[sbFeatureIncompat:])
	ro := le.Uint32(raw[sbFeatureRoCompat:])
	if incompat&incompat64Bit != 0 {
		sb.blocks |= uint64(le.Uint32(raw[sbBlocksCountHi:])) << 32
		sb.descSize = int64(le.Uint16(raw[sbDescSize:]))
		if sb.descSize < 64 || sb.descSize > 1024 || sb.descSize&(sb.descSize-1) != 0 {
			return nil, fmt.Errorf("superblock: group descriptor size %d", sb.descSize)
		}
	}
	// The fix-ups rewrite metadata in place; checksummed metadata would need every checksum
	// recomputed, and meta_bg/bigalloc move the structures parsed here. tar2ext4 enables none
	// of them: refuse rather than corrupt should that change.
	if ro&(roCompatMetadataCsu|roCompatGdtCsum|roCompatBigalloc) != 0 || incompat&incompatMetaBg != 0 {
		return nil, fmt.Errorf("superblock: unsupported features (incompat %#x, ro_compat %#x)", incompat, ro)
	}
	switch {
	case sb.blocksPerGroup == 0 || sb.blocksPerGroup > uint64(sb.blockSize)*8:
		return nil, fmt.Errorf("superblock: %d blocks per group", sb.blocksPerGroup)
	case sb.inodesPerGroup == 0 || int64(sb.inodesPerGroup) > sb.blockSize*8:
		return nil, fmt.Errorf("superblock: %d inodes per group", sb.inodesPerGroup)
	case sb.inodeSize < 128 || sb.inodeSize > sb.blockSize || sb.inodeSize&(sb.inodeSize-1) != 0:
		return nil, fmt.Errorf("superblock: inode size %d", sb.inodeSize)
	case sb.blocks <= sb.firstDataBlock:
		return nil, fmt.Errorf("superblock: %d blocks", sb.blocks)
	}
	sb.groups = (sb.blocks - sb.firstDataBlock + sb.blocksPerGroup - 1) / sb.blocksPerGroup
	if uint64(sb.inodesCount) != sb.groups*uint64(sb.inodesPerGroup) {
		return nil, fmt.Errorf("superblock: %d inodes, but %d groups of %d", sb.inodesCount, sb.groups, sb.inodesPerGroup)
	}
	return sb, nil
}

// group is the part of a group descriptor the fix-ups need.
type group struct {
	inodeBitmap, inodeTable uint64
}

func readGroups(r io.ReaderAt, sb *superblock) ([]group, error) {
	gdt := make([]byte, int64(sb.groups)*sb.descSize)
	if _, err := r.ReadAt(gdt, int64(sb.firstDataBlock+1)*sb.blockSize); err != nil {
		return nil, fmt.Errorf("reading group descriptors: %w", err)
	}
	le := binary.LittleEndian
	gs := make([]group, sb.groups)
	itBlocks := (int64(sb.inodesPerGroup)*sb.inodeSize + sb.blockSize - 1) / sb.blockSize
	for i := range gs {
		d := gdt[int64(i)*sb.descSize:]
		g := group{inodeBitmap: uint64(le.Uint32(d[0x04:])), inodeTable: uint64(le.Uint32(d[0x08:]))}
		if sb.descSize >= 64 {
			g.inodeBitmap |= uint64(le.Uint32(d[0x24:])) << 32
			g.inodeTable |= uint64(le.Uint32(d[0x28:])) << 32
		}
		if g.inodeBitmap >= sb.blocks || g.inodeTable+uint64(itBlocks) > sb.blocks {
			return nil, fmt.Errorf("group %d: inode bitmap %d or table %d outside the %d blocks", i, g.inodeBitmap, g.inodeTable, sb.blocks)
		}
		gs[i] = g
	}
	return gs, nil
}

// fixup repairs and stamps the file system tar2ext4 wrote in the first size bytes of r/w
// (see the package tests for what each step fixes) and returns its size and inode count.
func fixup(r io.ReaderAt, w io.WriterAt, size int64, o Options, stampLpf bool) (Info, error) {
	raw := make([]byte, sbSize)
	if _, err := r.ReadAt(raw, sbOffset); err != nil {
		return Info{}, fmt.Errorf("reading superblock: %w", err)
	}
	sb, err := parseSuperblock(raw)
	if err != nil {
		return Info{}, err
	}
	if sb.blocks > uint64(size/sb.blockSize) {
		return Info{}, fmt.Errorf("superblock: %d blocks of %d bytes, but %d bytes were written", sb.blocks, sb.blockSize, size)
	}
	// Every group has its own inode bitmap and table inside the file system (this also bounds
	// the work below by its size).
	if perGroup := uint64(sb.inodesPerGroup)*uint64(sb.inodeSize) + uint64(sb.blockSize); sb.groups*perGroup > uint64(size) {
		return Info{}, fmt.Errorf("superblock: %d groups of %d inodes do not fit in %d bytes", sb.groups, sb.inodesPerGroup, size)
	}
	groups, err := readGroups(r, sb)
	if err != nil {
		return Info{}, err
	}
	epoch := o.Epoch
	if epoch.IsZero() {
		epoch = time.Unix(0, 0)
	}
	xattrBlocks := map[uint64]bool{}
	for gi, g := range groups {
		bitmap, err := fixInodeBitmap(r, w, sb, g)
		if err != nil {
			return Info{}, fmt.Errorf("group %d: %w", gi, err)
		}
		if err := fixInodes(r, w, sb, g, uint32(gi), bitmap, epoch, stampLpf, xattrBlocks); err != nil {
			return Info{}, fmt.Errorf("group %d: %w", gi, err)
		}
	}
	stampSuperblock(sb, o, epoch)
	if _, err := w.WriteAt(sb.raw, sbOffset); err != nil {
		return Info{}, fmt.Errorf("writing superblock: %w", err)
	}
	return Info{
		Size:   int64(sb.blocks) * sb.blockSize,
		Blocks: uint32(sb.blocks),
		Inodes: sb.inodesCount - sb.freeInodes,
	}, nil
}

// fixInodeBitmap sets the padding bits of an inode bitmap: tar2ext4 leaves the bits past
// inodes_per_group clear, and e2fsck reports "Padding at end of inode bitmap is not set".
// It returns the bitmap.
func fixInodeBitmap(r io.ReaderAt, w io.WriterAt, sb *superblock, g group) ([]byte, error) {
	b := make([]byte, sb.blockSize)
	at := int64(g.inodeBitmap) * sb.blockSize
	if _, err := r.ReadAt(b, at); err != nil {
		return nil, fmt.Errorf("reading inode bitmap: %w", err)
	}
	changed := setPadding(b, sb.inodesPerGroup)
	if changed {
		if _, err := w.WriteAt(b, at); err != nil {
			return nil, fmt.Errorf("writing inode bitmap: %w", err)
		}
	}
	return b, nil
}

// setPadding sets bits n.. of b and reports whether any was clear.
func setPadding(b []byte, n uint32) bool {
	changed := false
	for i := int(n); i < len(b)*8; {
		if i%8 == 0 {
			if b[i/8] != 0xff {
				b[i/8], changed = 0xff, true
			}
			i += 8
			continue
		}
		if b[i/8]&(1<<(i%8)) == 0 {
			b[i/8] |= 1 << (i % 8)
			changed = true
		}
		i++
	}
	return changed
}

// fixInodes rewrites the times of every used inode of a group in the kernel's encoding, gives
// the root directory (and lost+found when the tree has none) the epoch as time, and sorts
// the entries of external extended attribute blocks (each once: seen records them).
func fixInodes(r io.ReaderAt, w io.WriterAt, sb *superblock, g group, gi uint32, bitmap []byte, epoch time.Time, stampLpf bool, xattrBlocks map[uint64]bool) error {
	table := make([]byte, int64(sb.inodesPerGroup)*sb.inodeSize)
	at := int64(g.inodeTable) * sb.blockSize
	if _, err := r.ReadAt(table, at); err != nil {
		return fmt.Errorf("reading inode table: %w", err)
	}
	le := binary.LittleEndian
	changed := false
	for j := uint32(0); j < sb.inodesPerGroup; j++ {
		if bitmap[j/8]&(1<<(j%8)) == 0 {
			continue
		}
		ino := gi*sb.inodesPerGroup + j + 1
		in := table[int64(j)*sb.inodeSize : int64(j+1)*sb.inodeSize]
		if le.Uint16(in[inMode:]) == 0 {
			continue
		}
		hasExtra := sb.inodeSize > 128 && le.Uint16(in[inExtraIsize:]) >= inCrtimeExtra+4-128
		before := string(in)
		if ino == rootIno || (stampLpf && ino == sb.lpfIno) {
			setInodeTimes(in, epoch.Unix(), uint32(epoch.Nanosecond()), hasExtra)
		} else if hasExtra {
			for _, f := range [][2]int{{inAtime, inAtimeExtra}, {inCtime, inCtimeExtra}, {inMtime, inMtimeExtra}, {inCrtime, inCrtimeExtra}} {
				lo, ex := fixTime(le.Uint32(in[f[0]:]), le.Uint32(in[f[1]:]))
				le.PutUint32(in[f[0]:], lo)
				le.PutUint32(in[f[1]:], ex)
			}
		}
		if string(in) != before {
			changed = true
		}
		acl := uint64(le.Uint32(in[inFileACL:])) | uint64(le.Uint16(in[inFileACLHi:]))<<32
		if acl != 0 && !xattrBlocks[acl] {
			xattrBlocks[acl] = true
			if acl >= sb.blocks {
				return fmt.Errorf("inode %d: xattr block %d outside the file system", ino, acl)
			}
			if err := sortXattrBlock(r, w, int64(acl)*sb.blockSize, sb.blockSize); err != nil {
				return fmt.Errorf("inode %d: %w", ino, err)
			}
		}
	}
	if changed {
		if _, err := w.WriteAt(table, at); err != nil {
			return fmt.Errorf("writing inode table: %w", err)
		}
	}
	return nil
}

func setInodeTimes(in []byte, s int64, ns uint32, hasExtra bool) {
	lo, ex := encodeTime(s, ns)
	le := binary.LittleEndian
	for _, f := range [][2]int{{inAtime, inAtimeExtra}, {inCtime, inCtimeExtra}, {inMtime, inMtimeExtra}, {inCrtime, inCrtimeExtra}} {
		if f[0] == inCrtime && !hasExtra {
			continue
		}
		le.PutUint32(in[f[0]:], lo)
		if hasExtra {
			le.PutUint32(in[f[1]:], ex)
		}
	}
}

// fixTime converts a time as compactext4 stores it into the kernel's encoding. compactext4
// stores the 64-bit value s | ns<<34 split in two words, so for 2038-01-19 and later the
// epoch bits come out one too low (the kernel reads 32-bit seconds as signed and adds
// epoch<<32: 2040 would read as 1904), and for times before 1970 the extra word is all ones
// (the sign extension of s), which the kernel reads as a time in 2446.
func fixTime(lo, extra uint32) (uint32, uint32) {
	var s int64
	var ns uint32
	if extra == 0xFFFFFFFF {
		// Before 1970: nanoseconds were overwritten by the sign extension.
		s = int64(int32(lo))
	} else {
		// compactext4 clamps times before 1901 to 0x80000000 with no epoch bits, which
		// decodes here as 2038-01-19T03:14:08Z: Write refuses such trees up front.
		s = int64(lo) | int64(extra&3)<<32
		ns = extra >> 2
	}
	return encodeTime(s, ns)
}

// encodeTime encodes s seconds and ns nanoseconds since 1970 as ext4 does: the low 32 bits
// of s (read back as signed), and an extra word of ns<<2 | epoch, where epoch counts the
// 2^32-second periods to add.
func encodeTime(s int64, ns uint32) (uint32, uint32) {
	lo := uint32(s)
	epoch := uint32((s-int64(int32(lo)))>>32) & 3
	return lo, ns<<2 | epoch
}

// decodeTime is the kernel's reading of an ext4 time.
func decodeTime(lo, extra uint32) time.Time {
	s := int64(int32(lo)) + int64(extra&3)<<32
	return time.Unix(s, int64(extra>>2))
}

// xattr block layout.
const (
	xattrMagic    = 0xEA020000
	xattrHdrSize  = 32
	xattrEntryHdr = 16
)

type xattrEntry struct {
	index byte
	name  []byte
	raw   []byte
}

// sortXattrBlock puts the entries of an external xattr block in the order the kernel's
// lookup relies on (index, name length, name: it stops at the first entry sorting after
// the one sought) and sets the block hash. compactext4 sorts them with a comparator that
// is not an ordering, so a file with more attributes than fit in its inode could have
// some of them not found.
func sortXattrBlock(r io.ReaderAt, w io.WriterAt, at, blockSize int64) error {
	b := make([]byte, blockSize)
	if _, err := r.ReadAt(b, at); err != nil {
		return fmt.Errorf("reading xattr block: %w", err)
	}
	le := binary.LittleEndian
	if m := le.Uint32(b); m != xattrMagic {
		return fmt.Errorf("xattr block: bad magic %#x", m)
	}
	var es []xattrEntry
	p := xattrHdrSize
	for p+4 <= len(b) && le.Uint32(b[p:]) != 0 {
		if p+xattrEntryHdr > len(b) {
			return errors.New("xattr block: entry past the end")
		}
		n := int(b[p])
		size := (xattrEntryHdr + n + 3) &^ 3
		if p+size > len(b) {
			return errors.New("xattr block: entry past the end")
		}
		es = append(es, xattrEntry{index: b[p+1], name: b[p+xattrEntryHdr : p+xattrEntryHdr+n], raw: append([]byte(nil), b[p:p+size]...)})
		p += size
	}
	sorted := sort.SliceIsSorted(es, func(i, j int) bool { return xattrLess(es[i], es[j]) })
	if !sorted {
		sort.SliceStable(es, func(i, j int) bool { return xattrLess(es[i], es[j]) })
	}
	var hash uint32
	q := xattrHdrSize
	for _, e := range es {
		copy(b[q:], e.raw)
		q += len(e.raw)
		eh := le.Uint32(e.raw[12:])
		if eh == 0 {
			hash = 0
			break
		}
		hash = hash<<16 ^ hash>>16 ^ eh
	}
	if le.Uint32(b[12:]) == hash && sorted {
		return nil
	}
	le.PutUint32(b[12:], hash)
	if _, err := w.WriteAt(b, at); err != nil {
		return fmt.Errorf("writing xattr block: %w", err)
	}
	return nil
}

func xattrLess(a, b xattrEntry) bool {
	if a.index != b.index {
		return a.index < b.index
	}
	if len(a.name) != len(b.name) {
		return len(a.name) < len(b.name)
	}
	return bytes.Compare(a.name, b.name) < 0
}

// stampSuperblock gives the file system its identity and times.
func stampSuperblock(sb *superblock, o Options, epoch time.Time) {
	raw, le := sb.raw, binary.LittleEndian
	copy(raw[sbUUID:sbUUID+16], o.UUID[:])
	clear(raw[sbVolumeName : sbVolumeName+16])
	copy(raw[sbVolumeName:], o.Label)
	s := epoch.Unix()
	le.PutUint32(raw[sbMkfsTime:], uint32(s))
	le.PutUint32(raw[sbWtime:], uint32(s))
	le.PutUint32(raw[sbLastcheck:], uint32(s))
	raw[sbMkfsTimeHi] = byte(s >> 32)
	raw[sbWtimeHi] = byte(s >> 32)
	raw[sbLastcheckHi] = byte(s >> 32)
	// As mke2fs: no mount-count driven checks (the file system is never written).
	le.PutUint16(raw[sbMaxMntCount:], 0xFFFF)
	// No directory is hashed (dir_index is off), but a seed derived from the UUID keeps
	// the file system reproducible should one ever be indexed (e2fsck -D).
	seed := sha256.Sum256(append([]byte("edgeimg ext4 hash seed\x00"), o.UUID[:]...))
	copy(raw[sbHashSeed:sbHashSeed+16], seed[:16])
	raw[sbDefHashVersion] = hashHalfMD4
}
