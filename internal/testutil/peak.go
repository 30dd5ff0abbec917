package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// StatusHWM returns the peak resident set size (VmHWM) in bytes from the text of a
// /proc/PID/status file, or 0.
func StatusHWM(status string) int64 {
	for _, l := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// SelfPeak is this process's peak resident set size in bytes.
func SelfPeak() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	return StatusHWM(string(b))
}

// RunPeak runs cmd and returns its peak resident set size, sampled from /proc/PID/status every
// 5 ms. (A child's own ru_maxrss would include this process's peak: Go starts children with
// vfork semantics, and exec keeps the old address space's high-water mark.) cmd's output is
// returned with the error when it fails.
func RunPeak(cmd *exec.Cmd) (int64, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	var peak int64
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return 0, fmt.Errorf("%w\n%s", err, out.String())
			}
			return peak, nil
		case <-tick.C:
			if b, err := os.ReadFile(status); err == nil {
				peak = max(peak, StatusHWM(string(b)))
			}
		}
	}
}
