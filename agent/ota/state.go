package ota

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/fleet/api"
)

// StateFile is the updater's persistent state on the data partition. It is replaced
// atomically (device.WriteFileAtomic) before every step that cannot be taken back, so the
// agent carries on after a power cut at any moment.
const StateFile = "var/lib/edgeimg/ota/state.json"

// State is the persisted state of the latest update (StateFile).
type State struct {
	// Version is the release the update installs.
	Version string `json:"version"`
	// Phase is one of the api.Update* states: downloading (writing the inactive slot),
	// rebooting (slot written, trial armed, rebooting into it), trial (the trial boot is
	// checking its health), committed, failed, refused.
	Phase string `json:"phase"`
	// Slot is the slot the update writes and tries; From the slot that ran when it started.
	Slot string `json:"slot,omitempty"`
	From string `json:"from,omitempty"`
	// Reason and Detail say why an update failed or was refused.
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Snapshot is set while a K3s snapshot taken for this update exists: a failed update
	// restores it, a committed or refused one drops it.
	Snapshot bool `json:"snapshot,omitempty"`
	// Total is the size of the release's parts.
	Total int64 `json:"total,omitempty"`
	// Tries counts the reboots into the trial (0 in states written before it was kept: one).
	Tries int `json:"tries,omitempty"`
}

// LoadState reads the persisted state; nil when the device has had no update.
func LoadState(p device.Paths) (*State, error) {
	b, err := os.ReadFile(p.Path(StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the update state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Path(StateFile), err)
	}
	return &s, nil
}

func saveState(p device.Paths, s *State, write func(string, []byte, os.FileMode) error) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := write(p.Path(StateFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving the update state: %w", err)
	}
	return nil
}

// done reports whether the update to the state's version has ended (it is not retried).
func (s *State) done() bool {
	switch s.Phase {
	case api.UpdateCommitted, api.UpdateFailed, api.UpdateRefused:
		return true
	}
	return false
}
