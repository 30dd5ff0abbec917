package ota

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
)

func bootCell(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func TestCheckTryboot(t *testing.T) {
	min := uint32(TrybootMinBuild.Unix())
	for _, tc := range []struct {
		name  string
		props map[string][]byte // nil: no /chosen/bootloader node
		// unsupported: the error wraps ErrTrybootUnsupported; want: text it has.
		unsupported bool
		want        string
	}{
		{name: "no node", unsupported: true, want: "not booted by the Raspberry Pi 4 EEPROM bootloader"},
		{name: "empty node", props: map[string][]byte{"partition": bootCell(2)}, unsupported: true, want: "neither build-timestamp nor capabilities"},
		{name: "exactly the minimum", props: map[string][]byte{"build-timestamp": bootCell(min)}},
		{name: "newer", props: map[string][]byte{"build-timestamp": bootCell(uint32(time.Date(2025, 5, 8, 12, 0, 0, 0, time.UTC).Unix()))}},
		{name: "documented spelling", props: map[string][]byte{"build_timestamp": bootCell(min + 1)}},
		{name: "one second too old", props: map[string][]byte{"build-timestamp": bootCell(min - 1)}, unsupported: true,
			want: "built 2022-11-24 (proc/device-tree/chosen/bootloader/build-timestamp = 1669334399), and tryboot_a_b needs 2022-11-25 or newer: update the bootloader EEPROM (sudo rpi-eeprom-update -a"},
		{name: "old without the capability", props: map[string][]byte{"build-timestamp": bootCell(uint32(time.Date(2021, 4, 29, 0, 0, 0, 0, time.UTC).Unix())), "capabilities": bootCell(0b11)},
			unsupported: true, want: "built 2021-04-29"},
		{name: "capability bit", props: map[string][]byte{"build-timestamp": bootCell(uint32(time.Date(2022, 10, 18, 0, 0, 0, 0, time.UTC).Unix())), "capabilities": bootCell(0xff)}},
		{name: "capability without a timestamp", props: map[string][]byte{"capabilities": bootCell(CapabilityTrybootAB)}},
		{name: "new timestamp, capability bit clear", props: map[string][]byte{"build-timestamp": bootCell(min + 86400), "capabilities": bootCell(0b11)}},
		{name: "text instead of a cell", props: map[string][]byte{"build-timestamp": []byte("1669334400\n")}, want: "11 bytes, not a 32-bit device-tree cell"},
		{name: "short capabilities", props: map[string][]byte{"capabilities": {4}}, want: "capabilities: 1 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := device.Paths{Root: t.TempDir()}
			if tc.props != nil {
				dir := p.Path(BootloaderDir)
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				for name, b := range tc.props {
					if err := os.WriteFile(filepath.Join(dir, name), b, 0o444); err != nil {
						t.Fatal(err)
					}
				}
			}
			err := CheckTryboot(p)
			if tc.want == "" && !tc.unsupported {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if errors.Is(err, ErrTrybootUnsupported) != tc.unsupported {
				t.Errorf("errors.Is(ErrTrybootUnsupported) = %v: %v", !tc.unsupported, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nlacks %q", err, tc.want)
			}
		})
	}
}
