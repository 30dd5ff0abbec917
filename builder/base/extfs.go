package base

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
)

// extFS reads the metadata of an ext4 filesystem by inode number: superblock, group
// descriptors, inode tables, extent trees (and ext2/3 block maps), directory blocks read
// linearly (hash-tree indexes are skipped over, as readdir does), inline data, in-inode and
// block extended attributes, and symlinks. It exists because walking by path through
// go-diskfs re-reads every directory from the root for every entry.
//
// Every on-disk number is checked before use: a corrupt filesystem gives an error, never a
// panic, an endless loop or a huge allocation.
type extFS struct {
	r         io.ReaderAt // the partition: offset 0 is the start of the filesystem
	size      int64       // bytes readable through r
	bs        int64       // block size
	blocks    uint64      // blocks in the filesystem
	inodes    uint32      // inodes in the filesystem
	ipg       uint32      // inodes per group
	inodeSize int64
	incompat  uint32
	roCompat  uint32
	itable    []uint64 // inode table block of each group
	csum      bool     // metadata_csum: inodes carry a crc32c
	csumSeed  uint32

	// A few inode table blocks, so that reading neighbouring inodes costs one read.
	mu        sync.Mutex
	cache     map[uint64][]byte
	cacheKeys []uint64
}

// Feature flags (superblock s_feature_incompat and s_feature_ro_compat).
const (
	incompatFiletype   = 0x2
	incompatJournalDev = 0x8
	incompatMetaBG     = 0x10
	incompatExtents    = 0x40
	incompat64Bit      = 0x80
	incompatEAInode    = 0x400
	incompatDirData    = 0x1000
	incompatCsumSeed   = 0x2000
	incompatInlineData = 0x8000
	incompatEncrypt    = 0x10000
	incompatCompress   = 0x1

	roCompatSparseSuper  = 0x1
	roCompatMetadataCsum = 0x400

	compatSparseSuper2 = 0x200
)

// Inode flags (i_flags).
const (
	inodeFlagExtents    = 0x80000
	inodeFlagInlineData = 0x10000000
)

const (
	rootIno        = 2
	maxExtentDepth = 5
	maxSymlink     = 4096
	xattrMagic     = 0xEA020000
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's crc32c(seed, b): no inversion on the way in or out.
func crc32c(seed uint32, b []byte) uint32 { return ^crc32.Update(^seed, castagnoli, b) }

func openExtFS(r io.ReaderAt, size int64) (*extFS, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		return nil, fmt.Errorf("reading the superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != 0xef53 {
		return nil, errors.New("no ext4 superblock")
	}
	logBlock := le.Uint32(sb[0x18:])
	if logBlock > 6 {
		return nil, fmt.Errorf("invalid block size 2^%d KiB", logBlock)
	}
	fs := &extFS{r: r, size: size, bs: 1024 << logBlock, cache: map[uint64][]byte{}}
	fs.inodes = le.Uint32(sb[0x00:])
	fs.blocks = uint64(le.Uint32(sb[0x04:]))
	firstData := uint64(le.Uint32(sb[0x14:]))
	bpg := uint64(le.Uint32(sb[0x20:]))
	fs.ipg = le.Uint32(sb[0x28:])
	compat := le.Uint32(sb[0x5c:])
	fs.incompat = le.Uint32(sb[0x60:])
	fs.roCompat = le.Uint32(sb[0x64:])
	fs.inodeSize = 128
	if le.Uint32(sb[0x4c:]) >= 1 { // dynamic revision
		fs.inodeSize = int64(le.Uint16(sb[0x58:]))
	}
	descSize := int64(32)
	if fs.incompat&incompat64Bit != 0 {
		fs.blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		descSize = int64(le.Uint16(sb[0xfe:]))
		if descSize < 64 || descSize > 1024 || descSize&(descSize-1) != 0 {
			return nil, fmt.Errorf("invalid group descriptor size %d", descSize)
		}
	}
	for _, f := range []struct {
		bit  uint32
		what string
	}{{incompatCompress, "compression"}, {incompatJournalDev, "an external journal device"},
		{incompatDirData, "directory data"}, {incompatEncrypt, "encryption"}} {
		if fs.incompat&f.bit != 0 {
			return nil, fmt.Errorf("the filesystem uses %s, which edgeimg cannot read", f.what)
		}
	}
	switch {
	case fs.inodeSize < 128 || fs.inodeSize > fs.bs || fs.inodeSize&(fs.inodeSize-1) != 0:
		return nil, fmt.Errorf("invalid inode size %d", fs.inodeSize)
	case bpg == 0 || bpg > uint64(fs.bs)*8 || fs.ipg == 0 || int64(fs.ipg) > fs.bs*8:
		return nil, fmt.Errorf("invalid group geometry: %d blocks and %d inodes per group", bpg, fs.ipg)
	case fs.blocks <= firstData || fs.blocks > uint64(size/fs.bs):
		return nil, fmt.Errorf("block count %d does not fit the %d-byte partition", fs.blocks, size)
	}
	groups := (fs.blocks - firstData + bpg - 1) / bpg
	if uint64(fs.inodes) > groups*uint64(fs.ipg) {
		return nil, fmt.Errorf("inode count %d exceeds %d groups of %d", fs.inodes, groups, fs.ipg)
	}
	if fs.roCompat&roCompatMetadataCsum != 0 {
		fs.csum = true
		if fs.incompat&incompatCsumSeed != 0 {
			fs.csumSeed = le.Uint32(sb[0x270:])
		} else {
			fs.csumSeed = crc32c(^uint32(0), sb[0x68:0x78]) // s_uuid
		}
	}

	// The group descriptors: one table after the superblock, or with meta_bg spread over
	// the first group of each meta group from s_first_meta_bg on.
	perBlock := uint64(fs.bs / descSize)
	descBlocks := (groups + perBlock - 1) / perBlock
	firstMeta := uint64(le.Uint32(sb[0x104:]))
	if fs.incompat&incompatMetaBG == 0 {
		firstMeta = descBlocks
	}
	backups := [2]uint64{uint64(le.Uint32(sb[0x24c:])), uint64(le.Uint32(sb[0x250:]))}
	hasSuper := func(g uint64) bool {
		switch {
		case g == 0:
			return true
		case compat&compatSparseSuper2 != 0:
			return g == backups[0] || g == backups[1]
		case fs.roCompat&roCompatSparseSuper == 0 || g == 1:
			return true
		}
		for _, p := range []uint64{3, 5, 7} {
			n := p
			for n < g {
				n *= p
			}
			if n == g {
				return true
			}
		}
		return false
	}
	fs.itable = make([]uint64, groups)
	buf := make([]byte, fs.bs)
	for b := uint64(0); b < descBlocks; b++ {
		loc := firstData + 1 + b
		if b >= firstMeta {
			g := b * perBlock
			loc = firstData + g*bpg
			if hasSuper(g) {
				loc++
			}
		}
		if err := fs.readBlock(buf, loc); err != nil {
			return nil, fmt.Errorf("reading group descriptors: %w", err)
		}
		for i := uint64(0); i < perBlock && b*perBlock+i < groups; i++ {
			d := buf[int64(i)*descSize:]
			t := uint64(le.Uint32(d[0x08:]))
			if descSize >= 64 {
				t |= uint64(le.Uint32(d[0x28:])) << 32
			}
			tableBlocks := (uint64(fs.ipg)*uint64(fs.inodeSize) + uint64(fs.bs) - 1) / uint64(fs.bs)
			if t == 0 || t >= fs.blocks || tableBlocks > fs.blocks-t {
				return nil, fmt.Errorf("group %d: inode table at block %d is outside the filesystem", b*perBlock+i, t)
			}
			fs.itable[b*perBlock+i] = t
		}
	}
	return fs, nil
}

// readBlock reads block n into b (len(b) == bs).
func (fs *extFS) readBlock(b []byte, n uint64) error {
	if n >= fs.blocks {
		return fmt.Errorf("block %d is outside the filesystem (%d blocks)", n, fs.blocks)
	}
	if _, err := fs.r.ReadAt(b, int64(n)*fs.bs); err != nil {
		return fmt.Errorf("reading block %d: %w", n, err)
	}
	return nil
}

// extInode is the part of an inode the reader uses.
type extInode struct {
	ino   uint32
	raw   []byte // the whole on-disk inode (inodeSize bytes)
	mode  uint16
	uid   uint32
	gid   uint32
	size  int64
	flags uint32
	mtime int64 // seconds
	nsec  int64
	acl   uint64 // block holding extended attributes, 0 for none
}

func (in *extInode) kind() uint16 { return in.mode & 0xf000 }

// Inode file types (i_mode & 0xf000).
const (
	modeFIFO    = 0x1000
	modeChar    = 0x2000
	modeDir     = 0x4000
	modeBlock   = 0x6000
	modeRegular = 0x8000
	modeSymlink = 0xa000
	modeSocket  = 0xc000
)

// inode reads inode ino.
func (fs *extFS) inode(ino uint32) (*extInode, error) {
	if ino == 0 || ino > fs.inodes {
		return nil, fmt.Errorf("inode %d is outside the filesystem (%d inodes)", ino, fs.inodes)
	}
	g, idx := (ino-1)/fs.ipg, int64((ino-1)%fs.ipg)
	off := idx * fs.inodeSize
	blk := fs.itable[g] + uint64(off/fs.bs)
	fs.mu.Lock()
	b, ok := fs.cache[blk]
	fs.mu.Unlock()
	if !ok {
		b = make([]byte, fs.bs)
		if err := fs.readBlock(b, blk); err != nil {
			return nil, fmt.Errorf("inode %d: %w", ino, err)
		}
		fs.mu.Lock()
		if len(fs.cacheKeys) >= 256 {
			delete(fs.cache, fs.cacheKeys[0])
			fs.cacheKeys = fs.cacheKeys[1:]
		}
		fs.cache[blk] = b
		fs.cacheKeys = append(fs.cacheKeys, blk)
		fs.mu.Unlock()
	}
	raw := b[off%fs.bs : off%fs.bs+fs.inodeSize]
	le := binary.LittleEndian
	extra := int64(0)
	if fs.inodeSize > 128 {
		extra = int64(le.Uint16(raw[0x80:]))
		if extra > fs.inodeSize-128 || extra%4 != 0 {
			return nil, fmt.Errorf("inode %d: invalid extra size %d", ino, extra)
		}
	}
	if fs.csum {
		if err := fs.checkInode(ino, raw, extra); err != nil {
			return nil, err
		}
	}
	in := &extInode{
		ino:   ino,
		raw:   raw,
		mode:  le.Uint16(raw[0x00:]),
		uid:   uint32(le.Uint16(raw[0x02:])) | uint32(le.Uint16(raw[0x78:]))<<16,
		gid:   uint32(le.Uint16(raw[0x18:])) | uint32(le.Uint16(raw[0x7a:]))<<16,
		size:  int64(uint64(le.Uint32(raw[0x04:])) | uint64(le.Uint32(raw[0x6c:]))<<32),
		flags: le.Uint32(raw[0x20:]),
		mtime: int64(int32(le.Uint32(raw[0x10:]))),
		acl:   uint64(le.Uint32(raw[0x68:])) | uint64(le.Uint16(raw[0x76:]))<<32,
	}
	if extra >= 0x8c-0x80 { // i_mtime_extra: two more bits of seconds, then nanoseconds
		x := le.Uint32(raw[0x88:])
		in.mtime += int64(x&3) << 32
		in.nsec = int64(x >> 2)
		if in.nsec > 999999999 {
			return nil, fmt.Errorf("inode %d: invalid mtime nanoseconds %d", ino, in.nsec)
		}
	}
	if in.size < 0 || in.size > fs.size && in.kind() != modeRegular {
		return nil, fmt.Errorf("inode %d: size %d is larger than the partition", ino, in.size)
	}
	return in, nil
}

// checkInode verifies the inode's crc32c (metadata_csum).
func (fs *extFS) checkInode(ino uint32, raw []byte, extra int64) error {
	le := binary.LittleEndian
	var n [4]byte
	le.PutUint32(n[:], ino)
	seed := crc32c(fs.csumSeed, n[:])
	le.PutUint32(n[:], le.Uint32(raw[0x64:])) // i_generation
	seed = crc32c(seed, n[:])
	hasHi := extra >= 4 // i_checksum_hi at 0x82 is within the extra fields
	var zero [2]byte
	c := crc32c(seed, raw[:0x7c])
	c = crc32c(c, zero[:])
	if hasHi {
		c = crc32c(c, raw[0x7e:0x82])
		c = crc32c(c, zero[:])
		c = crc32c(c, raw[0x84:])
	} else {
		c = crc32c(c, raw[0x7e:])
	}
	want := uint32(le.Uint16(raw[0x7c:]))
	if hasHi {
		want |= uint32(le.Uint16(raw[0x82:])) << 16
	} else {
		c &= 0xffff
	}
	if c != want {
		return fmt.Errorf("inode %d: checksum mismatch (on disk %08x, computed %08x)", ino, want, c)
	}
	return nil
}

// extent maps file blocks [logical, logical+count) to filesystem blocks from physical;
// physical 0 means a hole or an unwritten extent (reads as zeros).
type extent struct {
	logical, count, physical uint64
}

// extents returns the block mapping of a file of size bytes, sorted and non-overlapping,
// covering only blocks below the file's end.
func (fs *extFS) extents(in *extInode) ([]extent, error) {
	nblocks := uint64((in.size + fs.bs - 1) / fs.bs)
	var out []extent
	add := func(e extent) error {
		if e.logical >= nblocks || e.count == 0 {
			return nil
		}
		e.count = min(e.count, nblocks-e.logical)
		if e.physical != 0 && (e.physical >= fs.blocks || e.count > fs.blocks-e.physical) {
			return fmt.Errorf("blocks %d+%d are outside the filesystem", e.physical, e.count)
		}
		if n := len(out); n > 0 {
			last := out[n-1]
			if e.logical < last.logical+last.count {
				return fmt.Errorf("extents overlap or are out of order at file block %d", e.logical)
			}
			if e.physical != 0 && last.physical != 0 && last.logical+last.count == e.logical && last.physical+last.count == e.physical {
				out[n-1].count += e.count
				return nil
			}
		}
		if len(out) >= 1<<20 {
			return errors.New("too many extents")
		}
		out = append(out, e)
		return nil
	}
	var err error
	if in.flags&inodeFlagExtents != 0 {
		// Each node of a sound tree is its own block: more node reads than blocks means a
		// corrupt tree revisiting nodes.
		budget := min(fs.blocks, 1<<20)
		err = fs.walkExtents(in.raw[0x28:0x64], maxExtentDepth+1, &budget, add)
	} else {
		err = fs.walkBlockMap(in.raw[0x28:0x64], nblocks, add)
	}
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", in.ino, err)
	}
	return out, nil
}

// walkExtents visits the leaves of the extent tree node b.
func (fs *extFS) walkExtents(b []byte, depthLeft int, budget *uint64, add func(extent) error) error {
	le := binary.LittleEndian
	if len(b) < 12 || le.Uint16(b[0:]) != 0xf30a {
		return errors.New("bad extent header")
	}
	entries, depth := int(le.Uint16(b[2:])), int(le.Uint16(b[6:]))
	if 12+entries*12 > len(b) {
		return fmt.Errorf("extent node lists %d entries, room for %d", entries, (len(b)-12)/12)
	}
	if depth >= depthLeft {
		return fmt.Errorf("extent tree deeper than %d", maxExtentDepth)
	}
	if depth == 0 {
		for i := 0; i < entries; i++ {
			e := b[12+i*12:]
			n := uint64(le.Uint16(e[4:]))
			phys := uint64(le.Uint32(e[8:])) | uint64(le.Uint16(e[6:]))<<32
			if n > 32768 { // unwritten: allocated but reads as zeros
				n -= 32768
				phys = 0
			}
			if err := add(extent{logical: uint64(le.Uint32(e[0:])), count: n, physical: phys}); err != nil {
				return err
			}
		}
		return nil
	}
	child := make([]byte, fs.bs)
	for i := 0; i < entries; i++ {
		e := b[12+i*12:]
		leaf := uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
		if *budget == 0 {
			return errors.New("extent tree revisits its nodes")
		}
		*budget--
		if err := fs.readBlock(child, leaf); err != nil {
			return fmt.Errorf("extent tree: %w", err)
		}
		if d := int(le.Uint16(child[6:])); le.Uint16(child[0:]) == 0xf30a && d != depth-1 {
			return fmt.Errorf("extent node at block %d has depth %d under a node of depth %d", leaf, d, depth)
		}
		if err := fs.walkExtents(child, depth, budget, add); err != nil {
			return err
		}
	}
	return nil
}

// walkBlockMap visits the ext2/3 block map of a file of nblocks blocks: 12 direct pointers,
// then single, double and triple indirect blocks.
func (fs *extFS) walkBlockMap(b []byte, nblocks uint64, add func(extent) error) error {
	le := binary.LittleEndian
	per := uint64(fs.bs / 4)
	var logical uint64
	var visit func(ptr uint64, level int) error
	visit = func(ptr uint64, level int) error {
		span := uint64(1)
		for range level {
			span *= per
		}
		if logical >= nblocks {
			return nil
		}
		if ptr == 0 { // a hole
			logical += span
			return nil
		}
		if level == 0 {
			err := add(extent{logical: logical, count: 1, physical: ptr})
			logical++
			return err
		}
		blk := make([]byte, fs.bs)
		if err := fs.readBlock(blk, ptr); err != nil {
			return fmt.Errorf("indirect block: %w", err)
		}
		for i := uint64(0); i < per && logical < nblocks; i++ {
			if err := visit(uint64(le.Uint32(blk[i*4:])), level-1); err != nil {
				return err
			}
		}
		return nil
	}
	for i := 0; i < 15 && logical < nblocks; i++ {
		level := 0
		if i >= 12 {
			level = i - 11
		}
		if err := visit(uint64(le.Uint32(b[i*4:])), level); err != nil {
			return err
		}
	}
	return nil
}

// inlineData returns the content of an inode with the inline-data flag: the 60 bytes of
// i_block, then the in-inode attribute system.data.
func (fs *extFS) inlineData(in *extInode) ([]byte, error) {
	data := append([]byte(nil), in.raw[0x28:0x64]...)
	xa, err := fs.ibodyXattrs(in)
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", in.ino, err)
	}
	data = append(data, xa["system.data"]...)
	if in.size > int64(len(data)) {
		return nil, fmt.Errorf("inode %d: %d bytes of inline data, the inode says %d", in.ino, len(data), in.size)
	}
	return data[:in.size], nil
}

// fileReader reads a file's content through its block mapping.
type fileReader struct {
	fs   *extFS
	ext  []extent
	size int64
	pos  int64
}

func (fs *extFS) open(in *extInode) (io.Reader, error) {
	if in.flags&inodeFlagInlineData != 0 {
		d, err := fs.inlineData(in)
		if err != nil {
			return nil, err
		}
		return &byteReader{b: d}, nil
	}
	ext, err := fs.extents(in)
	if err != nil {
		return nil, err
	}
	return &fileReader{fs: fs, ext: ext, size: in.size}, nil
}

func (r *fileReader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.size-r.pos)]
	bs := r.fs.bs
	blk := uint64(r.pos / bs)
	for len(r.ext) > 0 && r.ext[0].logical+r.ext[0].count <= blk {
		r.ext = r.ext[1:]
	}
	// Up to the next extent boundary: data from one run of blocks, or zeros.
	if len(r.ext) == 0 || r.ext[0].logical > blk {
		end := r.size
		if len(r.ext) > 0 {
			end = min(end, int64(r.ext[0].logical)*bs)
		}
		p = p[:min(int64(len(p)), end-r.pos)]
		clear(p)
		r.pos += int64(len(p))
		return len(p), nil
	}
	e := r.ext[0]
	end := min(r.size, int64(e.logical+e.count)*bs)
	p = p[:min(int64(len(p)), end-r.pos)]
	if e.physical == 0 {
		clear(p)
		r.pos += int64(len(p))
		return len(p), nil
	}
	at := int64(e.physical)*bs + (r.pos - int64(e.logical)*bs)
	n, err := r.fs.r.ReadAt(p, at)
	r.pos += int64(n)
	if err != nil {
		if n == len(p) {
			return n, nil
		}
		return n, fmt.Errorf("reading at byte %d of the filesystem: %w", at, err)
	}
	return n, nil
}

type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// dirEntry is one name in a directory.
type dirEntry struct {
	name string
	ino  uint32
}

// readDir lists the names in directory in (without "." and "..").
func (fs *extFS) readDir(in *extInode) ([]dirEntry, error) {
	var out []dirEntry
	if in.flags&inodeFlagInlineData != 0 {
		d, err := fs.inlineData(in)
		if err != nil {
			return nil, err
		}
		if len(d) < 4 {
			return nil, fmt.Errorf("inode %d: inline directory of %d bytes", in.ino, len(d))
		}
		// The parent's inode number, then entries in the rest of i_block, then in system.data.
		if err := fs.parseDirBlock(d[4:min(len(d), 60)], &out); err != nil {
			return nil, fmt.Errorf("inode %d: %w", in.ino, err)
		}
		if len(d) > 60 {
			if err := fs.parseDirBlock(d[60:], &out); err != nil {
				return nil, fmt.Errorf("inode %d: %w", in.ino, err)
			}
		}
		return out, nil
	}
	if in.size%fs.bs != 0 {
		return nil, fmt.Errorf("inode %d: directory size %d is not a multiple of the block size", in.ino, in.size)
	}
	ext, err := fs.extents(in)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, fs.bs)
	for _, e := range ext {
		if e.physical == 0 {
			continue
		}
		for i := uint64(0); i < e.count; i++ {
			if err := fs.readBlock(buf, e.physical+i); err != nil {
				return nil, fmt.Errorf("inode %d: directory %w", in.ino, err)
			}
			if err := fs.parseDirBlock(buf, &out); err != nil {
				return nil, fmt.Errorf("inode %d: directory block %d: %w", in.ino, e.logical+i, err)
			}
		}
	}
	return out, nil
}

// parseDirBlock appends the live entries of one block of linear directory entries. A hash
// tree's index blocks look like blocks holding one unused entry, so they add nothing.
func (fs *extFS) parseDirBlock(b []byte, out *[]dirEntry) error {
	le := binary.LittleEndian
	for off := 0; off < len(b); {
		if len(b)-off < 8 {
			return fmt.Errorf("truncated entry at byte %d", off)
		}
		ino := le.Uint32(b[off:])
		recLen := int(le.Uint16(b[off+4:]))
		if fs.bs >= 65536 && (recLen == 65535 || recLen == 0) {
			recLen = int(fs.bs) // EXT4_MAX_REC_LEN: the entry spans a whole 64 KiB block
		}
		nameLen := int(b[off+6])
		if fs.incompat&incompatFiletype == 0 {
			nameLen |= int(b[off+7]) << 8
		}
		if recLen < 8 || recLen%4 != 0 || recLen > len(b)-off || (ino != 0 && 8+nameLen > recLen) {
			return fmt.Errorf("corrupt entry at byte %d (record length %d, name length %d)", off, recLen, nameLen)
		}
		if ino != 0 && nameLen > 0 {
			name := string(b[off+8 : off+8+nameLen])
			if name != "." && name != ".." {
				if ino > fs.inodes {
					return fmt.Errorf("entry %q names inode %d, beyond the %d inodes", name, ino, fs.inodes)
				}
				*out = append(*out, dirEntry{name: name, ino: ino})
			}
		}
		off += recLen
	}
	return nil
}

// xattrPrefixes are the name prefixes of the attribute name indexes (as go-diskfs names them).
var xattrPrefixes = map[uint8]string{
	0: "", 1: "user.", 2: "system.posix_acl_access", 3: "system.posix_acl_default",
	4: "trusted.", 6: "security.", 7: "system.",
}

// xattrs returns the inode's extended attributes: in the inode, then in its attribute
// block (a name in both keeps the in-inode value). Attributes with empty values are left
// out, and system.data (where inline data continues) is not an attribute of the file.
func (fs *extFS) xattrs(in *extInode) (map[string][]byte, error) {
	res, err := fs.ibodyXattrs(in)
	if err != nil {
		return nil, err
	}
	if in.acl != 0 {
		b := make([]byte, fs.bs)
		if err := fs.readBlock(b, in.acl); err != nil {
			return nil, fmt.Errorf("attribute block: %w", err)
		}
		if binary.LittleEndian.Uint32(b) != xattrMagic {
			return nil, fmt.Errorf("attribute block %d: bad magic %08x", in.acl, binary.LittleEndian.Uint32(b))
		}
		blk, err := parseXattrs(b[32:], b)
		if err != nil {
			return nil, fmt.Errorf("attribute block %d: %w", in.acl, err)
		}
		for k, v := range blk {
			if _, ok := res[k]; !ok {
				if res == nil {
					res = map[string][]byte{}
				}
				res[k] = v
			}
		}
	}
	delete(res, "system.data")
	if len(res) == 0 {
		return nil, nil
	}
	return res, nil
}

func (fs *extFS) ibodyXattrs(in *extInode) (map[string][]byte, error) {
	if fs.inodeSize <= 128 {
		return nil, nil
	}
	start := 128 + int(binary.LittleEndian.Uint16(in.raw[0x80:]))
	if start+4 > len(in.raw) || binary.LittleEndian.Uint32(in.raw[start:]) != xattrMagic {
		return nil, nil
	}
	region := in.raw[start+4:]
	m, err := parseXattrs(region, region)
	if err != nil {
		return nil, fmt.Errorf("attributes in the inode: %w", err)
	}
	return m, nil
}

// parseXattrs reads attribute entries from entries; value offsets are relative to values.
func parseXattrs(entries, values []byte) (map[string][]byte, error) {
	le := binary.LittleEndian
	var res map[string][]byte
	for pos := 0; pos+16 <= len(entries); {
		nameLen, index := int(entries[pos]), entries[pos+1]
		if nameLen == 0 && index == 0 {
			break
		}
		valOff, valIno, valSize := int(le.Uint16(entries[pos+2:])), le.Uint32(entries[pos+4:]), int64(le.Uint32(entries[pos+8:]))
		nameEnd := pos + 16 + nameLen
		if nameEnd > len(entries) {
			return nil, errors.New("attribute name runs past the end")
		}
		prefix, ok := xattrPrefixes[index]
		if !ok {
			prefix = fmt.Sprintf("unknown_%d.", index)
		}
		name := prefix + string(entries[pos+16:nameEnd])
		if valIno != 0 {
			return nil, fmt.Errorf("attribute %q: values stored in inodes (ea_inode) are not supported", name)
		}
		if valSize > 0 {
			if int64(valOff)+valSize > int64(len(values)) {
				return nil, fmt.Errorf("attribute %q: value runs past the end", name)
			}
			if res == nil {
				res = map[string][]byte{}
			}
			res[name] = append([]byte(nil), values[valOff:int64(valOff)+valSize]...)
		}
		pos = (nameEnd + 3) &^ 3
	}
	return res, nil
}

// symlink returns the target of a symbolic link.
func (fs *extFS) symlink(in *extInode) (string, error) {
	switch {
	case in.size == 0:
		return "", errors.New("symlink with an empty target")
	case in.size > maxSymlink:
		return "", fmt.Errorf("symlink target of %d bytes", in.size)
	case in.flags&inodeFlagInlineData != 0:
		d, err := fs.inlineData(in)
		return string(d), err
	case in.size < 60: // a fast symlink: the target is in i_block
		return string(in.raw[0x28 : 0x28+in.size]), nil
	}
	r, err := fs.open(in)
	if err != nil {
		return "", err
	}
	b := make([]byte, in.size)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("reading the symlink target: %w", err)
	}
	return string(b), nil
}

// device returns the device numbers of a character or block device inode.
func (in *extInode) device() (major, minor uint32) {
	le := binary.LittleEndian
	if old := le.Uint32(in.raw[0x28:]); old != 0 {
		return (old >> 8) & 0xff, old & 0xff
	}
	n := le.Uint32(in.raw[0x2c:])
	return (n >> 8) & 0xfff, (n & 0xff) | ((n >> 12) & 0xfff00)
}
