package ota

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/k3s"
	"github.com/edgeimg/edgeimg/hw/rpi4"
	"github.com/edgeimg/edgeimg/ota/apply"
)

// AutobootFile is autoboot.txt's name on the config partition.
const AutobootFile = "autoboot.txt"

// DeviceConfig returns the Config of the running device: the installed release
// (ReleaseFile), the trusted keys (TrustedDir), the card's partitions by PARTUUID
// (/dev/disk/by-partuuid/SIGNATURE-NN, the signature from the release's data partition), and
// the Raspberry Pi 4 slot switch, whose autoboot.txt is on partition 1, mounted (vfat) under
// /run/edgeimg/autoboot only while it is read or rewritten. r runs mount, umount and the
// reboots. An image without trusted keys takes no updates: the error wraps fs.ErrNotExist.
func DeviceConfig(p device.Paths, r k3s.Runner) (*Config, error) {
	rel, err := LoadRelease(p)
	if err != nil {
		return nil, err
	}
	keys, err := LoadKeys(p)
	if err != nil {
		return nil, err
	}
	if rel.Board != "rpi4" {
		return nil, fmt.Errorf("updates on board %q: only rpi4 has a slot switch", rel.Board)
	}
	sig, err := diskSignature(rel.DataPartUUID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Path(ReleaseFile), err)
	}
	partPath := func(n int) string {
		return p.Path(fmt.Sprintf("dev/disk/by-partuuid/%s-%02x", sig, n))
	}
	sw := rpi4.NewSwitch("", r.Run)
	sw.Bootloader = p.Path(BootloaderDir)
	sw.OpenAutoboot = MountedAutoboot(p, r, partPath(1))
	return &Config{
		Paths:     p,
		Switch:    sw,
		Card:      apply.BlockDevices(partPath),
		Keys:      keys,
		Installed: rel.Installed(),
		Runner:    r,
	}, nil
}

// diskSignature returns the SIGNATURE of an MBR PARTUUID SIGNATURE-NN, lower case.
func diskSignature(partuuid string) (string, error) {
	sig, num, ok := strings.Cut(strings.ToLower(partuuid), "-")
	if _, err := strconv.ParseUint(sig, 16, 32); !ok || err != nil || len(sig) != 8 || len(num) != 2 {
		return "", fmt.Errorf("dataPartUUID %q is not an MBR PARTUUID (xxxxxxxx-NN)", partuuid)
	}
	return sig, nil
}

// MountedAutoboot returns an rpi4.Switch.OpenAutoboot that mounts the config partition dev
// (vfat, synchronous writes) on /run/edgeimg/autoboot, opens autoboot.txt on it for an
// in-place rewrite, and unmounts it again when the file is closed. One open at a time.
func MountedAutoboot(p device.Paths, r k3s.Runner, dev string) func() (rpi4.SectorFile, error) {
	var mu sync.Mutex
	dir := p.Path("run/edgeimg/autoboot")
	return func() (rpi4.SectorFile, error) {
		mu.Lock()
		ctx := context.Background()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			mu.Unlock()
			return nil, fmt.Errorf("creating %s: %w", dir, err)
		}
		if err := r.Run(ctx, "mount", "-t", "vfat", "-o", "rw,nosuid,nodev,noexec,sync", dev, dir); err != nil {
			mu.Unlock()
			return nil, fmt.Errorf("mounting the config partition: %w", err)
		}
		unmount := func() error {
			defer mu.Unlock()
			if err := r.Run(ctx, "umount", dir); err != nil {
				return fmt.Errorf("unmounting the config partition: %w", err)
			}
			return nil
		}
		f, err := rpi4.NewSwitch(filepath.Join(dir, AutobootFile), nil).OpenAutoboot()
		if err != nil {
			return nil, errors.Join(err, unmount())
		}
		return &mountedFile{SectorFile: f, unmount: unmount}, nil
	}
}

type mountedFile struct {
	rpi4.SectorFile
	unmount func() error
}

func (m *mountedFile) Close() error {
	return errors.Join(m.SectorFile.Close(), m.unmount())
}
