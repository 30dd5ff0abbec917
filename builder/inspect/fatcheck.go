package inspect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/edgeimg/edgeimg/builder/fatfs"
)

// maxFATBytes bounds the FAT that checkFAT32 reads (a 32 GiB card's FAT32 with 32 KiB
// clusters has a 4 MiB FAT).
const maxFATBytes = 64 << 20

// checkFAT32 checks the FAT32 filesystem of the partition at start (size bytes) before
// go-diskfs v1.9.4 reads it, which on a corrupt boot sector allocates and parses a FAT of
// any size it is told (gigabytes), and follows cluster chains without a bound (a loop is
// forever). It checks the geometry against the partition, then rejects any cycle among the
// chains of the first FAT.
func checkFAT32(r io.ReaderAt, start, size int64) error {
	var b [sectorSize]byte
	if _, err := r.ReadAt(b[:], start); err != nil {
		return fmt.Errorf("reading the boot sector: %w", err)
	}
	bps := int64(binary.LittleEndian.Uint16(b[11:13]))
	spc := int64(b[13])
	reserved := int64(binary.LittleEndian.Uint16(b[14:16]))
	nfats := int64(b[16])
	totSec := int64(binary.LittleEndian.Uint32(b[32:36]))
	fatSz := int64(binary.LittleEndian.Uint32(b[36:40]))
	switch {
	case string(b[82:87]) != "FAT32":
		return errors.New("not FAT32")
	case bps != sectorSize:
		return fmt.Errorf("%d-byte sectors, not %d", bps, sectorSize)
	case spc == 0 || spc&(spc-1) != 0:
		return fmt.Errorf("%d sectors per cluster is not a power of two", spc)
	case nfats != 2:
		return fmt.Errorf("%d FATs, not 2", nfats)
	case reserved == 0 || fatSz == 0 || fatSz*bps > maxFATBytes:
		return fmt.Errorf("FAT of %d sectors after %d reserved ones", fatSz, reserved)
	case totSec*bps > size:
		return fmt.Errorf("the filesystem (%d sectors) is larger than its partition (%d bytes)", totSec, size)
	case reserved+nfats*fatSz >= totSec:
		return errors.New("no data area")
	}
	fat := make([]byte, fatSz*bps)
	if _, err := r.ReadAt(fat, start+reserved*bps); err != nil {
		return fmt.Errorf("reading the FAT: %w", err)
	}
	n := uint32(len(fat) / 4)
	if clusters := uint32((totSec-reserved-nfats*fatSz)/spc) + 2; clusters < n {
		n = clusters
	}
	next := func(c uint32) uint32 { return binary.LittleEndian.Uint32(fat[4*c:]) & 0x0fffffff }
	return fatfs.CheckChains(n, next)
}
