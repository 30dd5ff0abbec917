package grow

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resizePartition changes the kernel's idea of partition pno's size (BLKPG_RESIZE_PARTITION);
// start must be the partition's current start, both in bytes.
func resizePartition(dev *os.File, pno int, start, size int64) error {
	part := unix.BlkpgPartition{Start: start, Length: size, Pno: int32(pno)}
	arg := unix.BlkpgIoctlArg{
		Op:      unix.BLKPG_RESIZE_PARTITION,
		Datalen: int32(unsafe.Sizeof(part)),
		Data:    (*byte)(unsafe.Pointer(&part)),
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, dev.Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg)))
	runtime.KeepAlive(&part)
	if errno != 0 {
		return errno
	}
	return nil
}

// deviceSize returns the size in bytes of a block device (BLKGETSIZE64).
func deviceSize(dev *os.File) (int64, error) {
	var n uint64
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, dev.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n)))
	if errno != 0 {
		return 0, errno
	}
	return int64(n), nil
}
