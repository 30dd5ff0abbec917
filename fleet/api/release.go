package api

import (
	"errors"
	"fmt"
	"time"
)

// Release routes. Device routes take the device's client certificate (mTLS); the admin
// routes take the admin token. {version} is a release version ("2", "2024.11.25").
//
//	GET  /v1/releases/{version}/manifest       manifest.json, the exact signed bytes
//	GET  /v1/releases/{version}/signature      manifest.sig
//	GET  /v1/releases/{version}/index/{part}   the part's chunk index (ota/delta.Index JSON)
//	GET  /v1/releases/{version}/bundle         the whole bundle (NAME-BOARD.update); Range, ETag
//	GET  /v1/chunks/{sha256}                   one chunk's bytes
//
//	POST /v1/admin/releases                    body: a bundle (application/octet-stream)
//	GET  /v1/admin/releases                    []ReleaseInfo
//	GET  /v1/admin/releases/{version}          ReleaseInfo
//	POST /v1/admin/releases/{version}/rollout  RolloutRequest → RolloutStatus
//	GET  /v1/admin/releases/{version}/rollout  RolloutStatus
//	POST /v1/admin/releases/{version}/rollout/{pause|resume|abort} → RolloutStatus
const (
	PathReleases = "/v1/releases/"
	PathChunks   = "/v1/chunks/"
)

// MaxBundleBytes bounds a pushed bundle.
const MaxBundleBytes = 64 << 30

// Update states a device reports (Heartbeat.Update.State).
const (
	UpdateDownloading = "downloading" // fetching and writing the inactive slot
	UpdateRebooting   = "rebooting"   // slot written and verified, trial boot armed, rebooting
	UpdateTrial       = "trial"       // running the new release on a trial boot, health checks going on
	UpdateCommitted   = "committed"   // the new release passed its health checks and is the default slot
	UpdateFailed      = "failed"      // the trial boot failed its health checks: back on the old release
	UpdateRefused     = "refused"     // the bundle was rejected before the slot was made bootable
)

// UpdateStatus is what a device reports about the update to a target release.
type UpdateStatus struct {
	// Version is the release the status is about.
	Version string `json:"version"`
	// State is one of the Update* states.
	State string `json:"state"`
	// Reason is a short stable reason for failed and refused (a bundle.Reason such as
	// "bad signature", or "health timeout", "bootloader too old"); Detail says more.
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Downloaded and Reused are bytes fetched from the fleet and bytes taken from the card's
	// active slot (delta downloads); Total is the size of the release's parts.
	Downloaded int64 `json:"downloaded,omitempty"`
	Reused     int64 `json:"reused,omitempty"`
	Total      int64 `json:"total,omitempty"`
}

// Validate checks an update status.
func (u *UpdateStatus) Validate() error {
	if err := validShort(map[string]string{"version": u.Version}); err != nil {
		return err
	}
	if u.Version == "" {
		return errors.New("update.version: empty")
	}
	switch u.State {
	case UpdateDownloading, UpdateRebooting, UpdateTrial, UpdateCommitted, UpdateFailed, UpdateRefused:
	default:
		return fmt.Errorf("update.state %q: unknown", trunc(u.State))
	}
	if len(u.Reason) > maxShortLen || len(u.Detail) > maxErrLen {
		return fmt.Errorf("update.reason or update.detail too long")
	}
	if u.Downloaded < 0 || u.Reused < 0 || u.Total < 0 {
		return errors.New("update: negative byte counts")
	}
	return nil
}

// ReleaseInfo describes a stored release.
type ReleaseInfo struct {
	Version       string    `json:"version"`
	Name          string    `json:"name"`
	Board         string    `json:"board"`
	LayoutVersion int       `json:"layout_version"`
	MinVersion    string    `json:"min_version,omitempty"`
	Rollback      bool      `json:"rollback,omitempty"`
	KeyID         string    `json:"key_id"`
	Size          int64     `json:"size"`       // bytes of the bundle
	PartsSize     int64     `json:"parts_size"` // bytes of the parts
	Chunks        int       `json:"chunks"`
	NewBytes      int64     `json:"new_bytes"` // chunk bytes this release added to the store (not shared with earlier ones)
	SHA256        string    `json:"sha256"`    // of the bundle
	PushedAt      time.Time `json:"pushed_at"`
}

// Rollout states.
const (
	RolloutRunning   = "running"
	RolloutPaused    = "paused"
	RolloutHalted    = "halted"    // failures passed the limit; resume to go on anyway
	RolloutAborted   = "aborted"   // devices not yet updated keep their release
	RolloutCompleted = "completed" // every selected device committed (or failed within the limit)
)

// RolloutRequest starts a rollout of a stored release.
type RolloutRequest struct {
	// Selector picks devices by label (all of them must match); empty: every device.
	Selector map[string]string `json:"selector,omitempty"`
	// Waves are cumulative percentages of the selected devices, ascending, the last 100
	// (e.g. 5, 25, 100).
	Waves []float64 `json:"waves"`
	// MaxFailures is the percentage of the devices targeted so far whose failure halts the
	// rollout (e.g. 2).
	MaxFailures float64 `json:"max_failures"`
}

// Validate checks a rollout request.
func (r *RolloutRequest) Validate() error {
	if err := ValidLabels(r.Selector); err != nil {
		return fmt.Errorf("selector: %w", err)
	}
	if len(r.Waves) == 0 || len(r.Waves) > 20 {
		return errors.New("waves: 1 to 20 percentages")
	}
	prev := 0.0
	for i, w := range r.Waves {
		if !(w > prev) || w > 100 {
			return fmt.Errorf("waves[%d] = %g: percentages must increase, each in (0, 100]", i, w)
		}
		prev = w
	}
	if prev != 100 {
		return fmt.Errorf("waves: the last wave is %g%%, it must be 100%%", prev)
	}
	if !(r.MaxFailures >= 0 && r.MaxFailures <= 100) {
		return fmt.Errorf("max_failures %g: a percentage from 0 to 100", r.MaxFailures)
	}
	return nil
}

// RolloutStatus is a rollout's state.
type RolloutStatus struct {
	Version     string            `json:"version"`
	State       string            `json:"state"`
	Reason      string            `json:"reason,omitempty"` // why it halted
	Selector    map[string]string `json:"selector,omitempty"`
	Waves       []float64         `json:"waves"`
	MaxFailures float64           `json:"max_failures"`
	// Wave is the index of the current wave in Waves.
	Wave      int       `json:"wave"`
	Selected  int       `json:"selected"`  // devices the selector matched when the rollout started
	Targeted  int       `json:"targeted"`  // devices told to update so far
	Committed int       `json:"committed"` // of those, running the release
	Failed    int       `json:"failed"`    // of those, failed or refused
	Pending   int       `json:"pending"`   // of those, still on their way
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Failures lists the failed devices with their reasons (at most 100).
	Failures []RolloutFailure `json:"failures,omitempty"`
}

// RolloutFailure is a device whose update failed.
type RolloutFailure struct {
	DeviceID string `json:"device_id"`
	State    string `json:"state"` // failed or refused
	Reason   string `json:"reason"`
	Detail   string `json:"detail,omitempty"`
}
