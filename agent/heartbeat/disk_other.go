//go:build !linux

package heartbeat

import "errors"

func diskUse(string) (used, total uint64, err error) {
	return 0, 0, errors.New("disk use: only on Linux")
}
