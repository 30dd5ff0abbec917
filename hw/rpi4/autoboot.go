package rpi4

import (
	"strconv"
	"strings"
)

// FirmwareBoot returns the boot partition the Pi 4 firmware picks from autoboot.txt, read as
// the firmware reads config files: line by line, `[section]` filters (`[all]` always applies,
// `[tryboot]` only on a one-shot trial boot, `[pi4]` on a Pi 4, any other filter not here),
// `key=value` settings where the last applicable one wins, anything else ignored. ok is false
// when no applicable boot_partition is set or tryboot_a_b is not 1 (without it the firmware
// does not treat the file as an A/B switch).
func FirmwareBoot(autoboot []byte, tryboot bool) (partition int, ok bool) {
	apply := true
	ab := false
	part := 0
	for _, line := range strings.Split(string(autoboot), "\n") {
		line = strings.TrimSpace(strings.TrimRight(line, "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				continue
			}
			switch line[1 : len(line)-1] {
			case "all":
				apply = true
			case "tryboot":
				apply = tryboot
			case "pi4":
				apply = true
			default:
				apply = false
			}
			continue
		}
		if !apply {
			continue
		}
		k, v, found := strings.Cut(line, "=")
		if !found {
			continue
		}
		switch strings.TrimSpace(k) {
		case "tryboot_a_b":
			ab = strings.TrimSpace(v) == "1"
		case "boot_partition":
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err == nil && n > 0 && n < 128 {
				part = n
			}
		}
	}
	return part, ab && part > 0
}

// ParseAutoboot returns the default and trial boot partitions of an autoboot.txt as the
// firmware would use them.
func ParseAutoboot(b []byte) (def, try int, ok bool) {
	def, ok1 := FirmwareBoot(b, false)
	try, ok2 := FirmwareBoot(b, true)
	return def, try, ok1 && ok2
}
