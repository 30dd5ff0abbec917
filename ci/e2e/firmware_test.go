package e2e

// The Pi firmware's decision, played by the harness between two QEMU runs. It has no build
// tag: `go test ./ci/e2e/` runs its unit test without QEMU, and the e2e test uses it.

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/hw/rpi4"
)

// runEnd is how a run of the emulated device ended, as the kernel's last words on the
// console say (kernel/reboot.c prints them with the prefix "reboot: ").
type runEnd int

const (
	// endNone: no power-off and no restart on the console (a hang, a crash, a killed QEMU).
	endNone runEnd = iota
	// endPowerOff: "reboot: Power down".
	endPowerOff
	// endRestart: "reboot: Restarting system", with or without a command.
	endRestart
)

func (e runEnd) String() string {
	switch e {
	case endPowerOff:
		return "power-off"
	case endRestart:
		return "restart"
	}
	return "no power-off or restart"
}

// shutdown is the end of a run: its kind and, for a restart, the command the kernel was given
// (`reboot "0 tryboot"` gives "0 tryboot"), or whether a kernel panic restarted the machine
// (panic=10: the firmware then boots as after any reset).
type shutdown struct {
	End     runEnd
	Command string
	Panic   bool
}

func (s shutdown) String() string {
	switch {
	case s.End == endRestart && s.Panic:
		return "restart after a kernel panic"
	case s.End == endRestart && s.Command != "":
		return fmt.Sprintf("restart with command %q", s.Command)
	}
	return s.End.String()
}

// trybootRequested reports whether the run ended the way that sets the Pi firmware's one-shot
// tryboot flag: a restart whose command has the word "tryboot" (the Raspberry Pi kernel's
// firmware driver passes it to the firmware on the reboot).
func (s shutdown) trybootRequested() bool {
	return s.End == endRestart && hasField(s.Command, "tryboot")
}

var (
	powerDownLine = regexp.MustCompile(`reboot: Power down\s*$`)
	restartLine   = regexp.MustCompile(`reboot: Restarting system(?: with command '([^']*)')?\s*$`)
	// panicLine is kernel/panic.c's last word before the emergency restart panic=N asks for.
	panicLine = regexp.MustCompile(`Rebooting in [0-9]+ seconds\.\.\s*$`)
)

// parseShutdown returns how the run whose (plain) console text is console ended: its last
// kernel power-off, restart or panic-restart line.
func parseShutdown(console string) shutdown {
	lines := strings.Split(console, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		if powerDownLine.MatchString(l) {
			return shutdown{End: endPowerOff}
		}
		if m := restartLine.FindStringSubmatch(l); m != nil {
			return shutdown{End: endRestart, Command: m[1]}
		}
		if panicLine.MatchString(l) {
			return shutdown{End: endRestart, Panic: true}
		}
	}
	return shutdown{End: endNone}
}

// firmwareBoot is what the firmware boots next: a boot partition, on a trial boot or not.
type firmwareBoot struct {
	Partition int
	Tryboot   bool
}

func (b firmwareBoot) String() string {
	return fmt.Sprintf("boot partition %d, tryboot=%d", b.Partition, b2i(b.Tryboot))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// firmwareDecide is the Pi 4 firmware's choice after a run that ended with end, the card's
// autoboot.txt being autoboot: the [tryboot] boot_partition once, when the device restarted
// with the tryboot flag, the default otherwise (a power-off or a plain restart; the harness
// powers the device on again). A run that neither powered off nor restarted is an error:
// the harness does not power-cycle a hung device. rpi4.FirmwareBoot reads the file as the
// firmware does.
func firmwareDecide(autoboot []byte, end shutdown) (firmwareBoot, error) {
	if end.End == endNone {
		return firmwareBoot{}, fmt.Errorf("the run ended with %s: no next boot", end)
	}
	try := end.trybootRequested()
	part, ok := rpi4.FirmwareBoot(autoboot, try)
	if !ok {
		return firmwareBoot{}, fmt.Errorf("autoboot.txt (tryboot=%d) sets no boot_partition with tryboot_a_b=1: the firmware would not boot an A/B slot:\n%s",
			b2i(try), strings.TrimRight(string(autoboot), " \n#"))
	}
	return firmwareBoot{Partition: part, Tryboot: try}, nil
}

func hasField(s, field string) bool {
	for _, x := range strings.Fields(s) {
		if x == field {
			return true
		}
	}
	return false
}

func TestParseShutdown(t *testing.T) {
	for _, c := range []struct {
		name, console string
		want          shutdown
	}{
		{"power-off", "[   60.1] systemd-shutdown[1]: Powering off.\n[   60.2] reboot: Power down\n", shutdown{End: endPowerOff}},
		{"plain restart", "[   70.0] systemd-shutdown[1]: Rebooting.\n[   70.1] reboot: Restarting system\n", shutdown{End: endRestart}},
		{"tryboot restart", "[   81.3] reboot: Restarting system with command '0 tryboot'\n", shutdown{End: endRestart, Command: "0 tryboot"}},
		{"last line wins", "reboot: Power down\nreboot: Restarting system with command 'x'\n", shutdown{End: endRestart, Command: "x"}},
		{"panic", "[   9.1] Kernel panic - not syncing: VFS: Unable to mount root fs\n[   9.2] Rebooting in 10 seconds..\n", shutdown{End: endRestart, Panic: true}},
		{"hung", "[ 300.0] e2e-report: update mode\n", shutdown{End: endNone}},
		{"not a kernel line", "E2E echo reboot: Power down now\n", shutdown{End: endNone}},
		{"empty", "", shutdown{End: endNone}},
	} {
		if got := parseShutdown(c.console); got != c.want {
			t.Errorf("%s: parseShutdown = %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestFirmwareDecide(t *testing.T) {
	armedB := rpi4.Autoboot(2, 3)     // as built: default A, trial B
	committedB := rpi4.Autoboot(3, 2) // after the commit of B: default B, trial A
	for _, c := range []struct {
		name     string
		autoboot []byte
		end      shutdown
		want     firmwareBoot
		err      string
	}{
		{"power-off boots the default", armedB, shutdown{End: endPowerOff}, firmwareBoot{2, false}, ""},
		{"plain restart boots the default", armedB, shutdown{End: endRestart}, firmwareBoot{2, false}, ""},
		{"tryboot restart boots the trial slot once", armedB, shutdown{End: endRestart, Command: "0 tryboot"}, firmwareBoot{3, true}, ""},
		{"other restart command", armedB, shutdown{End: endRestart, Command: "0"}, firmwareBoot{2, false}, ""},
		{"a word containing tryboot is not the flag", armedB, shutdown{End: endRestart, Command: "notryboot"}, firmwareBoot{2, false}, ""},
		// A power-off after the device armed its trial is not a request: the firmware's flag
		// is set only by the restart.
		{"committed B, power-off", committedB, shutdown{End: endPowerOff}, firmwareBoot{3, false}, ""},
		{"committed B, trial of A", committedB, shutdown{End: endRestart, Command: "0 tryboot"}, firmwareBoot{2, true}, ""},
		{"failed trial of A restarts normally", committedB, shutdown{End: endRestart}, firmwareBoot{3, false}, ""},
		// A trial that panics (or hangs until the watchdog resets it) is what the one-shot
		// flag is for: the reset boots the default again.
		{"panicked trial of B", armedB, shutdown{End: endRestart, Panic: true}, firmwareBoot{2, false}, ""},
		{"hung run", armedB, shutdown{End: endNone}, firmwareBoot{}, "no next boot"},
		{"no A/B switch", []byte("[all]\nboot_partition=2\n"), shutdown{End: endPowerOff}, firmwareBoot{}, "sets no boot_partition"},
		{"no trial partition", []byte("[all]\ntryboot_a_b=1\n"), shutdown{End: endRestart, Command: "0 tryboot"}, firmwareBoot{}, "tryboot=1"},
	} {
		got, err := firmwareDecide(c.autoboot, c.end)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: firmwareDecide = %v, %v; want an error with %q", c.name, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: firmwareDecide = %v, %v; want %v", c.name, got, err, c.want)
		}
	}
}
