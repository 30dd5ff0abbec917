package ota

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/ota/apply"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// Files of the running image the updater reads (relative to device.Paths).
const (
	// ReleaseFile describes the installed release (builder/rootfs.Release).
	ReleaseFile = "usr/lib/edgeimg/release.json"
	// TrustedDir holds the public keys releases must be signed with, KEYID.pub.
	TrustedDir = "usr/lib/edgeimg/ota/trusted"
	// ConfigFile holds the image's update settings (the spec's ota:).
	ConfigFile = "usr/lib/edgeimg/ota/ota.json"
)

// DefaultHealthTimeout bounds a trial boot's health checks when the image sets none.
const DefaultHealthTimeout = 600 * time.Second

// Release is the part of ReleaseFile the updater uses.
type Release struct {
	Name          string `json:"name"`
	Board         string `json:"board"`
	Version       string `json:"version"`
	LayoutVersion int    `json:"layoutVersion"`
	// DataPartUUID is the data partition's PARTUUID, SIGNATURE-NN: every partition of the
	// card is SIGNATURE-<number>.
	DataPartUUID string `json:"dataPartUUID"`
}

// Installed returns what apply.Check compares a release with.
func (r Release) Installed() apply.Installed {
	return apply.Installed{Board: r.Board, LayoutVersion: r.LayoutVersion, Version: r.Version}
}

// LoadRelease reads the installed release.
func LoadRelease(p device.Paths) (Release, error) {
	var r Release
	b, err := os.ReadFile(p.Path(ReleaseFile))
	if err != nil {
		return r, fmt.Errorf("reading the installed release: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", p.Path(ReleaseFile), err)
	}
	if r.Board == "" || r.Version == "" || r.LayoutVersion == 0 {
		return r, fmt.Errorf("%s: board, version or layoutVersion missing", p.Path(ReleaseFile))
	}
	return r, nil
}

// LoadKeys reads the trusted public keys, TrustedDir/*.pub. An image without the directory
// has no keys: it takes no updates (fs.ErrNotExist).
func LoadKeys(p device.Paths) (bundle.Keyring, error) {
	dir := p.Path(TrustedDir)
	names, err := filepath.Glob(filepath.Join(dir, "*.pub"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("no trusted update keys in %s: %w", dir, fs.ErrNotExist)
	}
	ring := bundle.Keyring{}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("reading trusted key: %w", err)
		}
		pk, err := bundle.ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("trusted key %s: %w", n, err)
		}
		for id, k := range bundle.NewKeyring(pk) {
			ring[id] = k
		}
	}
	return ring, nil
}

// Settings is ConfigFile, written by the builder from the spec's ota:.
type Settings struct {
	// HealthTimeoutSeconds bounds a trial boot's health checks; 0: DefaultHealthTimeout.
	HealthTimeoutSeconds int `json:"health_timeout_seconds,omitempty"`
}

// LoadSettings reads ConfigFile; the defaults when the image has none.
func LoadSettings(p device.Paths) (Settings, error) {
	var s Settings
	b, err := os.ReadFile(p.Path(ConfigFile))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading the update settings: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("%s: %w", p.Path(ConfigFile), err)
	}
	if s.HealthTimeoutSeconds < 0 {
		return s, fmt.Errorf("%s: health_timeout_seconds %d is negative", p.Path(ConfigFile), s.HealthTimeoutSeconds)
	}
	return s, nil
}

// HealthTimeout returns the health check bound.
func (s Settings) HealthTimeout() time.Duration {
	if s.HealthTimeoutSeconds > 0 {
		return time.Duration(s.HealthTimeoutSeconds) * time.Second
	}
	return DefaultHealthTimeout
}
