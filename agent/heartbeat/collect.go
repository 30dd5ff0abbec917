package heartbeat

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/fleet/api"
)

// Collector gathers a heartbeat's measurements.
type Collector struct {
	Paths device.Paths
	// Node reports the K3s node's readiness and not-ready pods; nil reports not ready.
	Node func(ctx context.Context) (ready bool, notReady []string, err error)
}

// Collect fills the measurements of hb (version, slot, role and errors are the caller's) and
// returns the problems it met; a missing measurement is left zero.
func (c Collector) Collect(ctx context.Context, hb *api.Heartbeat) []error {
	var errs []error
	if total, avail, err := memInfo(c.Paths.Path(device.MemInfo)); err != nil {
		errs = append(errs, err)
	} else {
		hb.MemTotal, hb.MemUsed = total, total-min(avail, total)
	}
	if up, err := uptime(c.Paths.Path(device.Uptime)); err != nil {
		errs = append(errs, err)
	} else {
		hb.UptimeSeconds = up
	}
	if used, total, err := diskUse(c.Paths.Path(device.StateDir)); err != nil {
		errs = append(errs, err)
	} else {
		hb.DiskUsed, hb.DiskTotal = used, total
	}
	if c.Node != nil {
		ready, notReady, err := c.Node(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("k3s node status: %w", err))
		}
		hb.NodeReady = ready
		if len(notReady) > 100 {
			notReady = notReady[:100]
		}
		hb.NotReadyPods = notReady
	}
	return errs
}

func memInfo(path string) (total, avail uint64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("reading memory use: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "MemTotal:":
			total = v * 1024
		case "MemAvailable:":
			avail = v * 1024
		}
	}
	if total == 0 {
		return 0, 0, fmt.Errorf("%s: no MemTotal", path)
	}
	return total, avail, nil
}

func uptime(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading the uptime: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("%s: empty", path)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%s: %q is not an uptime", path, f[0])
	}
	return int64(v), nil
}
