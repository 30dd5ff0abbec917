package device

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/edgeimg/edgeimg/fleet/api"
)

// ID returns the device's stable ID: the serial number from the device tree (a Raspberry
// Pi's), else an ID generated once ("gen-" and 16 hex digits) and kept in
// /var/lib/edgeimg/device-id. The ID never changes across reboots, so a device never enrolls
// twice; the device-tree serial survives even a wiped data partition.
func ID(p Paths) (string, error) {
	if b, err := os.ReadFile(p.Path(DeviceTreeSerial)); err == nil {
		serial := strings.ToLower(strings.TrimSpace(strings.TrimRight(string(b), "\x00")))
		if serial != "" && strings.Trim(serial, "0") != "" {
			if err := api.ValidDeviceID(serial); err != nil {
				return "", fmt.Errorf("%s: %w", p.Path(DeviceTreeSerial), err)
			}
			return serial, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading the serial number: %w", err)
	}
	file := p.Path(DeviceIDFile)
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		id := strings.TrimSpace(string(b))
		if err := api.ValidDeviceID(id); err != nil {
			return "", fmt.Errorf("%s: %w", file, err)
		}
		return id, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("reading the device id: %w", err)
	}
	r := make([]byte, 8)
	if _, err := rand.Read(r); err != nil {
		return "", err
	}
	id := "gen-" + hex.EncodeToString(r)
	if err := WriteFileAtomic(file, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("keeping the generated device id: %w", err)
	}
	return id, nil
}
