package daemon

import (
	"context"
	"fmt"
)

// applyNetwork makes the imported network settings take effect: Wi-Fi unblocked (Raspberry Pi
// OS keeps it rfkill-blocked until a country is set) in the settings' regulatory domain, and
// NetworkManager told to read the keyfiles Import wrote (it does not watch them). Failures are
// logged and reported, never fatal: K3s must start whatever the network does.
func (a *agent) applyNetwork(ctx context.Context) {
	s := a.settings
	if s == nil || (s.WiFi == nil && s.Network == nil) {
		return
	}
	var cmds [][]string
	if w := s.WiFi; w != nil {
		if w.Country != "" {
			cmds = append(cmds, []string{"iw", "reg", "set", w.Country})
		}
		cmds = append(cmds, []string{"rfkill", "unblock", "wifi"})
	}
	cmds = append(cmds, []string{"nmcli", "connection", "reload"})
	for _, c := range cmds {
		if err := a.cfg.Runner.Run(ctx, c[0], c[1:]...); err != nil {
			err = fmt.Errorf("applying the network settings: %w", err)
			a.log.Warn("network", "err", err)
			a.record(err)
		}
	}
}
