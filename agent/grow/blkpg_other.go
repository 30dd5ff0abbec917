//go:build !linux

package grow

import (
	"errors"
	"os"
)

var errNotLinux = errors.New("block device ioctls are only implemented on Linux")

func resizePartition(*os.File, int, int64, int64) error { return errNotLinux }

func deviceSize(*os.File) (int64, error) { return 0, errNotLinux }
