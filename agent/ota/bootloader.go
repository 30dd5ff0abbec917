package ota

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
)

// BootloaderDir is where the Raspberry Pi 4 EEPROM bootloader describes itself to Linux: the
// device tree's /chosen/bootloader node, one file per property (relative to device.Paths.Root).
//
// The properties CheckTryboot reads, each a 32-bit big-endian cell (Raspberry Pi
// documentation, "Device Trees, Overlays, and Parameters", BCM2711 bootloader properties):
//   - build-timestamp: the EEPROM build's UTC time, in seconds since 1970. The documentation
//     spells it build_timestamp; the firmware and rpi-eeprom-update
//     (DT_BOOTLOADER_TS=/proc/device-tree/chosen/bootloader/build-timestamp) use the hyphen.
//     Both names are read.
//   - capabilities: a bit field of the bootloader's features; bit 2 is TRYBOOT_A_B mode.
const BootloaderDir = "proc/device-tree/chosen/bootloader"

// TrybootMinBuild is the oldest EEPROM build CheckTryboot accepts by its date: pieeprom-2022-11-25,
// the first default release with the tryboot_a_b mode of autoboot.txt (it came in the
// 2022-10-18 beta; rpi-eeprom firmware-2711/release-notes.md).
var TrybootMinBuild = time.Date(2022, 11, 25, 0, 0, 0, 0, time.UTC)

// CapabilityTrybootAB is the bit of the bootloader's capabilities cell that says it supports
// the tryboot_a_b mode.
const CapabilityTrybootAB = 1 << 2

// ErrTrybootUnsupported is wrapped by CheckTryboot's refusal: the bootloader does not support
// (or does not show that it supports) tryboot_a_b, so an A/B update could not be tried and
// rolled back.
var ErrTrybootUnsupported = errors.New("the bootloader does not support tryboot_a_b")

// CheckTryboot checks, before the first A/B update, that the Raspberry Pi's EEPROM bootloader
// supports the tryboot_a_b mode the A/B switch needs: its capabilities cell has
// CapabilityTrybootAB, or its build-timestamp is TrybootMinBuild or newer. A bootloader too old,
// a /chosen/bootloader node without either cell, or no node at all (the device was not booted
// by the Pi 4 EEPROM bootloader) is an error wrapping ErrTrybootUnsupported that says what was
// found and what to do; a cell of the wrong size is an error naming its file.
func CheckTryboot(p device.Paths) error {
	dir := p.Path(BootloaderDir)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s is missing: the device was not booted by the Raspberry Pi 4 EEPROM bootloader, which A/B updates need", ErrTrybootUnsupported, dir)
		}
		return fmt.Errorf("reading the bootloader's properties: %w", err)
	}
	capsVal, hasCaps, err := bootloaderCell(p, "capabilities")
	if err != nil {
		return err
	}
	if hasCaps && capsVal&CapabilityTrybootAB != 0 {
		return nil
	}
	ts, hasTS, err := bootloaderCell(p, "build-timestamp")
	if err == nil && !hasTS {
		ts, hasTS, err = bootloaderCell(p, "build_timestamp")
	}
	if err != nil {
		return err
	}
	const update = "update the bootloader EEPROM (sudo rpi-eeprom-update -a, then reboot; or write the Raspberry Pi Imager's bootloader image to a card and boot it once)"
	if !hasTS {
		return fmt.Errorf("%w: %s has neither build-timestamp nor capabilities: the bootloader EEPROM predates them, so it is older than %s: %s",
			ErrTrybootUnsupported, dir, TrybootMinBuild.Format(time.DateOnly), update)
	}
	built := time.Unix(int64(ts), 0).UTC()
	if !built.Before(TrybootMinBuild) {
		return nil
	}
	return fmt.Errorf("%w: the bootloader EEPROM was built %s (%s = %d), and tryboot_a_b needs %s or newer: %s",
		ErrTrybootUnsupported, built.Format(time.DateOnly), path.Join(BootloaderDir, "build-timestamp"), ts, TrybootMinBuild.Format(time.DateOnly), update)
}

// bootloaderCell reads a 32-bit property of the bootloader node; ok is false when it is absent.
func bootloaderCell(p device.Paths, name string) (v uint32, ok bool, err error) {
	file := p.Path(path.Join(BootloaderDir, name))
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading the bootloader's %s: %w", name, err)
	}
	if len(b) != 4 {
		return 0, false, fmt.Errorf("%s: %d bytes, not a 32-bit device-tree cell", file, len(b))
	}
	return binary.BigEndian.Uint32(b), true, nil
}
