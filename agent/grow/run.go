package grow

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Options say which partition Run grows and where the device files are.
type Options struct {
	// PARTUUID identifies the data partition, as the kernel spells an MBR one:
	// "<disk signature, 8 hex digits>-<partition number, 2 hex digits>", e.g. "5eed1e55-07".
	PARTUUID string
	// Root is prepended to /dev and /sys, so that tests can run on a directory laid out like
	// them. The default, "", means the real ones.
	Root string
}

// Result says what Run found and did.
type Result struct {
	// Disk is the path of the whole-disk device holding the partition, e.g. /dev/mmcblk0
	// (under Options.Root).
	Disk string
	// Partition is the data partition's number.
	Partition int
	// DiskSize is the disk's size in bytes.
	DiskSize int64
	// OldSize and NewSize are the partition's size in bytes before and after; they are equal
	// when it already filled the disk.
	OldSize, NewSize int64
	// Grown is whether the partition was grown, in the table or, after an earlier run that
	// grew the table, only in the kernel.
	Grown bool
}

// ParsePARTUUID splits an MBR PARTUUID ("5eed1e55-07") into the disk signature and the
// partition number.
func ParsePARTUUID(id string) (signature uint32, partition int, err error) {
	sig, num, ok := strings.Cut(id, "-")
	if !ok || len(sig) != 8 || len(num) != 2 {
		return 0, 0, fmt.Errorf("PARTUUID %q is not of the MBR form xxxxxxxx-NN", id)
	}
	s, err1 := strconv.ParseUint(sig, 16, 32)
	n, err2 := strconv.ParseUint(num, 16, 8)
	if err1 != nil || err2 != nil || n == 0 {
		return 0, 0, fmt.Errorf("PARTUUID %q is not of the MBR form xxxxxxxx-NN (hexadecimal, partition from 01)", id)
	}
	return uint32(s), int(n), nil
}

// Run grows the data partition named by opts.PARTUUID to the end of its disk: it finds the
// partition through /dev/disk/by-partuuid and its disk through /sys/class/block, checks that the
// disk's signature is the PARTUUID's, then calls Plan and Apply. Running it again is a no-op.
//
// When the kernel has no such partition, because the card ends before it, Run finds the disk
// through partition 1 (same signature, number 01) instead, so that the error is Plan's
// ErrCardTooSmall with the sizes rather than a missing device.
func Run(ctx context.Context, opts Options) (Result, error) {
	sig, number, err := ParsePARTUUID(opts.PARTUUID)
	if err != nil {
		return Result{}, err
	}
	root := opts.Root
	if root == "" {
		root = "/"
	}
	id := strings.ToLower(opts.PARTUUID)

	// 1. The partition, from udev's link, and its disk, from sysfs. When the kernel does not
	// know the partition (a card cut short before it), find the disk through partition 1,
	// which has the same disk signature, so that Plan can say what is wrong.
	link := filepath.Join(root, "dev/disk/by-partuuid", id)
	sysPart, diskName, err := findPartition(root, link, number)
	if errors.Is(err, os.ErrNotExist) {
		first := filepath.Join(root, "dev/disk/by-partuuid", fmt.Sprintf("%08x-01", sig))
		var err1 error
		if _, diskName, err1 = findPartition(root, first, 1); err1 == nil {
			sysPart, err = "", nil
		}
	}
	if err != nil {
		return Result{}, fmt.Errorf("finding the device of PARTUUID %s: %w", id, err)
	}
	res := Result{Disk: filepath.Join(root, "dev", diskName), Partition: number}

	// 2. The disk, opened read-only until there is something to write.
	disk, err := os.Open(res.Disk)
	if err != nil {
		return res, err
	}
	defer disk.Close()
	if res.DiskSize, err = sizeOf(disk); err != nil {
		return res, err
	}
	var mbrSig [4]byte
	if _, err := disk.ReadAt(mbrSig[:], 440); err != nil {
		return res, fmt.Errorf("reading the disk signature of %s: %w", res.Disk, err)
	}
	if got := binary.LittleEndian.Uint32(mbrSig[:]); got != sig {
		return res, fmt.Errorf("%s has disk signature %08x, not the %08x of PARTUUID %s", res.Disk, got, sig, id)
	}

	// 3. Plan and apply.
	change, data, err := plan(disk, res.DiskSize, number)
	if err != nil {
		return res, fmt.Errorf("planning the growth of partition %d of %s: %w", number, res.Disk, err)
	}
	if sysPart == "" {
		return res, fmt.Errorf("the kernel has no partition %d on %s (no %s)", number, res.Disk, link)
	}
	kernelStart, errStart := readSysInt(filepath.Join(sysPart, "start"))
	if errStart == nil && uint64(kernelStart) != data.start {
		return res, fmt.Errorf("the kernel has partition %d of %s at sector %d but the table at sector %d", number, res.Disk, kernelStart, data.start)
	}
	if change == nil {
		res.OldSize = int64(data.size) * SectorSize
		res.NewSize = res.OldSize
		// The table may have been grown by an earlier run in this boot whose ioctl did not
		// happen; then tell the kernel now (after a reboot it reads the table anyway).
		fi, err := disk.Stat()
		if err != nil {
			return res, err
		}
		if k, err := readSysInt(filepath.Join(sysPart, "size")); err == nil && uint64(k) < data.size && isBlockDevice(fi.Mode()) {
			if err := tellKernel(disk, number, int64(data.start)*SectorSize, res.NewSize); err != nil {
				return res, err
			}
			res.Grown = true
		}
		return res, nil
	}
	res.OldSize, res.NewSize = change.OldSize, change.NewSize
	w, err := os.OpenFile(res.Disk, os.O_RDWR, 0)
	if err != nil {
		return res, err
	}
	defer w.Close()
	if err := Apply(ctx, w, change); err != nil {
		return res, err
	}
	if err := w.Close(); err != nil {
		return res, fmt.Errorf("closing %s: %w", res.Disk, err)
	}
	res.Grown = true
	return res, nil
}

// findPartition resolves udev's link to partition number of a disk and returns the
// partition's directory in /sys/class/block and the name of its disk.
func findPartition(root, link string, number int) (sysPart, disk string, err error) {
	target, err := os.Readlink(link)
	if err != nil {
		return "", "", err
	}
	name := filepath.Base(target)
	// /sys/class/block/<name> links to …/block/<disk>/<name>.
	sysPart = filepath.Join(root, "sys/class/block", name)
	n, err := readSysInt(filepath.Join(sysPart, "partition"))
	if err != nil {
		return "", "", fmt.Errorf("reading the partition number of %s: %w", name, err)
	}
	if n != int64(number) {
		return "", "", fmt.Errorf("%s is partition %d but PARTUUID %s names partition %d", name, n, filepath.Base(link), number)
	}
	real, err := filepath.EvalSymlinks(sysPart)
	if err != nil {
		return "", "", fmt.Errorf("finding the disk of %s: %w", name, err)
	}
	disk = filepath.Base(filepath.Dir(real))
	if _, err := os.Stat(filepath.Join(root, "sys/class/block", disk, "partition")); !errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("the parent of %s in sysfs, %s, is not a whole disk", name, disk)
	}
	return sysPart, disk, nil
}

// tellKernel resizes partition pno in the kernel when dev is a block device.
func tellKernel(dev *os.File, pno int, start, size int64) error {
	fi, err := dev.Stat()
	if err != nil {
		return err
	}
	if !isBlockDevice(fi.Mode()) {
		return nil
	}
	if err := resizePartition(dev, pno, start, size); err != nil {
		return fmt.Errorf("telling the kernel that partition %d of %s now has %d bytes: %w", pno, dev.Name(), size, err)
	}
	return nil
}

// sizeOf returns the size of a block device or of a regular file (a disk image).
func sizeOf(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !isBlockDevice(fi.Mode()) {
		return fi.Size(), nil
	}
	n, err := deviceSize(f)
	if err != nil {
		return 0, fmt.Errorf("reading the size of %s: %w", f.Name(), err)
	}
	return n, nil
}

func readSysInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", path, err)
	}
	return n, nil
}
