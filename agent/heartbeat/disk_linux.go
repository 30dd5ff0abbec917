package heartbeat

import (
	"fmt"
	"syscall"
)

// diskUse returns the used and total bytes of the filesystem holding path.
func diskUse(path string) (used, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	total = st.Blocks * bs
	used = total - min(st.Bfree*bs, total)
	return used, total, nil
}
