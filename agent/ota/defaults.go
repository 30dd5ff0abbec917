package ota

import "context"

// defaults fills in the package's own bootloader check, K3s health check and K3s snapshot
// functions where cfg sets none.
func defaults(cfg *Config) {
	p, r := cfg.Paths, cfg.Runner
	if cfg.Bootloader == nil {
		cfg.Bootloader = func() error { return CheckTryboot(p) }
	}
	if cfg.Snapshot == nil {
		cfg.Snapshot = func(ctx context.Context) error { return Snapshot(ctx, p, r) }
	}
	if cfg.Restore == nil {
		cfg.Restore = func(ctx context.Context) error { return Restore(ctx, p, r) }
	}
	if cfg.DropSnapshot == nil {
		cfg.DropSnapshot = func() error { return DropSnapshot(p) }
	}
	if cfg.Health == nil {
		cfg.Health = K3sHealth(p, "")
	}
}
