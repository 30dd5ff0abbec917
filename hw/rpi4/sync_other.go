//go:build !linux

package rpi4

import "os"

func fdatasync(f *os.File) error { return f.Sync() }
