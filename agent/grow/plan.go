package grow

import (
	"errors"
	"fmt"
	"io"
)

// ErrCardTooSmall is returned when the card is smaller than the image's partition layout: the
// image was cut short when it was written.
var ErrCardTooSmall = errors.New("card too small")

// Write is one sector rewrite of a Change.
type Write struct {
	// Offset is the byte offset of the sector on the disk, a multiple of SectorSize.
	Offset int64
	// Data is the new content of the whole sector, SectorSize bytes.
	Data []byte
}

// Change is the growth of the data partition to the end of the card, as Plan works it out.
type Change struct {
	// Partition is the number of the grown partition, as Linux numbers it (7 in the image).
	Partition int
	// Container is the number of the extended partition grown with it, 0 for a primary one.
	Container int
	// Start is the partition's start on the disk in bytes; it does not move.
	Start int64
	// OldSize and NewSize are the partition's size in bytes before and after.
	OldSize, NewSize int64
	// Writes are the sector rewrites, in the order Apply must make them: the extended
	// partition's entry in the MBR first, then the data partition's entry in its EBR.
	Writes []Write
}

// Plan reads the MBR layout of disk, which is diskSize bytes long, and works out how to grow
// partition dataPartition to the end of the disk, rounded down to Alignment (and to the 2 TiB an
// MBR entry can describe). dataPartition must be the last partition on the disk; a logical one
// grows with the extended partition that holds it.
//
// Plan returns a nil Change when the partition already ends there, so that running the growth
// again is a no-op, and an error wrapping ErrCardTooSmall when the disk ends before some partition
// of the layout does. Plan only reads; the table is untrusted input and every link and size in it
// is checked.
func Plan(disk io.ReaderAt, diskSize int64, dataPartition int) (*Change, error) {
	c, _, err := plan(disk, diskSize, dataPartition)
	return c, err
}

// plan is Plan that also returns the data partition as the table has it now.
func plan(disk io.ReaderAt, diskSize int64, dataPartition int) (*Change, partition, error) {
	if diskSize < SectorSize {
		return nil, partition{}, fmt.Errorf("%w: the card has %d bytes, not even a partition table", ErrCardTooSmall, max(diskSize, 0))
	}
	sectors := uint64(diskSize) / SectorSize
	mbr, err := readSector(disk, sectors, 0)
	if err != nil {
		return nil, partition{}, fmt.Errorf("reading the MBR: %w", err)
	}
	parts, err := readPrimaries(mbr)
	if err != nil {
		return nil, partition{}, err
	}
	// The primaries, the extended partition included, bound the whole layout: check the card
	// against them before following EBRs that a short card may not even hold.
	if err := checkFits(parts, sectors, diskSize); err != nil {
		return nil, partition{}, err
	}
	var ext *partition
	for i := range parts {
		if parts[i].extended {
			ext = &parts[i]
		}
	}
	all := parts
	if ext != nil {
		logicals, err := readLogicals(disk, sectors, *ext)
		if err != nil {
			return nil, partition{}, err
		}
		all = append(append([]partition(nil), parts...), logicals...)
	}

	var data *partition
	for i := range all {
		if all[i].number == dataPartition {
			data = &all[i]
		}
	}
	switch {
	case data == nil:
		return nil, partition{}, fmt.Errorf("the partition table has no partition %d", dataPartition)
	case data.extended:
		return nil, partition{}, fmt.Errorf("partition %d is an extended partition, not a data partition", dataPartition)
	}
	logical := data.number > 4
	for _, p := range all {
		if p.number == data.number || (logical && p.extended) {
			continue
		}
		if p.end() > data.start {
			return nil, partition{}, fmt.Errorf("partition %d (sectors %d to %d) does not end before data partition %d (from sector %d): the data partition must be the last one", p.number, p.start, p.end(), data.number, data.start)
		}
	}

	// The new end: the card's end rounded down to the alignment, and no further than the
	// 32-bit sizes of the entries to rewrite can reach.
	base := data.start
	if logical {
		base = ext.start
	}
	end := min(sectors, base+maxSectors) / alignSectors * alignSectors
	if end <= data.end() {
		return nil, *data, nil
	}

	c := &Change{
		Partition: data.number,
		Start:     int64(data.start) * SectorSize,
		OldSize:   int64(data.size) * SectorSize,
		NewSize:   int64(end-data.start) * SectorSize,
	}
	// Power-cut safety: every write is one sector and the table is valid after each of them.
	// The extended partition grows first: it then merely has free space after its last logical
	// partition. Only then does the data partition grow into that space. In the other order a
	// cut between the two writes would leave partition 7 reaching past the end of the partition
	// that must contain it. Running again after a cut finds the extended partition already grown
	// and makes only the second write.
	if logical {
		c.Container = ext.number
		if ext.end() < end {
			c.Writes = append(c.Writes, Write{Offset: 0, Data: resized(mbr, ext.slot, ext.start, end-ext.start)})
		}
		ebr, err := readSector(disk, sectors, data.tableSector)
		if err != nil {
			return nil, partition{}, fmt.Errorf("reading the EBR of partition %d: %w", data.number, err)
		}
		c.Writes = append(c.Writes, Write{Offset: int64(data.tableSector) * SectorSize, Data: resized(ebr, data.slot, data.start, end-data.start)})
	} else {
		c.Writes = append(c.Writes, Write{Offset: 0, Data: resized(mbr, data.slot, data.start, end-data.start)})
	}
	return c, *data, nil
}

// checkFits returns an ErrCardTooSmall error when a partition ends past the end of the card.
func checkFits(parts []partition, sectors uint64, diskSize int64) error {
	need := uint64(0)
	for _, p := range parts {
		need = max(need, p.end())
	}
	if need > sectors {
		n := int64(need) * SectorSize
		return fmt.Errorf("%w: the card has %d bytes (%s) but the image's layout needs %d (%s): write the image to a card of at least %d bytes (%s)",
			ErrCardTooSmall, diskSize, human(diskSize), n, human(n), n, human(n))
	}
	return nil
}

// human formats a byte count in binary units for messages.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
}
