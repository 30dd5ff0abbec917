package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
)

// FormatVersion is the bundle format this package writes and reads.
const FormatVersion = 1

// Limits of what the parser accepts from an untrusted stream.
const (
	MaxManifestSize  = 64 << 10 // bytes of manifest.json
	MaxSignatureSize = 1 << 10  // bytes of manifest.sig
	MaxParts         = 8
	MaxPartSize      = 1 << 40 // 1 TiB, the spec's largest partition
	MaxPatchLen      = 4096    // bytes of a per-slot patch (a cmdline.txt)
)

// Names of the parts a bundle carries, in this order.
const (
	PartBoot   = "boot"   // the boot partition's FAT filesystem, as built for slot A
	PartSystem = "system" // the system slot's ext4 filesystem
)

// Manifest describes a release: what it is for and the parts it carries. It is signed as the
// exact bytes Marshal returns.
type Manifest struct {
	// Format is FormatVersion.
	Format int `json:"format"`
	// Name is the image name (spec name).
	Name string `json:"name"`
	// Version is the release version (spec version): dot-separated decimals.
	Version string `json:"version"`
	// Board is the board the release was built for.
	Board string `json:"board"`
	// Compatible are further boards the release runs on; Board is always compatible.
	Compatible []string `json:"compatible,omitempty"`
	// LayoutVersion is the board's disk layout version: a card with another layout is refused,
	// since an update never rewrites the partition table.
	LayoutVersion int `json:"layoutVersion"`
	// MinVersion is the oldest installed version this release may update from ("0": any).
	MinVersion string `json:"minVersion"`
	// Rollback allows installing over a newer or equal version.
	Rollback bool `json:"rollback,omitempty"`
	// Parts are the slot contents, in the order the bundle stores them.
	Parts []Part `json:"parts"`
}

// Part is one partition image of a slot.
type Part struct {
	// Name is PartBoot or PartSystem.
	Name string `json:"name"`
	// Size is the number of bytes, written from the partition's start.
	Size int64 `json:"size"`
	// SHA256 is the lower-case hex sha256 of the Size bytes as stored in the bundle.
	SHA256 string `json:"sha256"`
	// Patch, for the boot part, holds what differs between slots: the bytes of cmdline.txt
	// naming each slot's root. They are written over the part's bytes at Patch.Offset.
	Patch *Patch `json:"patch,omitempty"`
}

// Patch is a per-slot overwrite of a part: Slots maps a slot name ("a", "b") to the bytes
// written at Offset when the part lands in that slot. The stored part holds Slots[From].
// All variants have the same length, so the file holding them keeps its size.
type Patch struct {
	Offset int64             `json:"offset"`
	From   string            `json:"from"`
	Slots  map[string]string `json:"slots"`
}

var (
	hexSumRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	wordRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
)

// Marshal returns the canonical bytes of the manifest: encoding/json's compact output (fields
// in declaration order, map keys sorted), which is what is signed.
func (m *Manifest) Marshal() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// ParseManifest decodes manifest bytes strictly: at most MaxManifestSize bytes, no unknown
// fields, nothing after the object, in canonical form (re-encoding gives the same bytes), and
// valid by Validate. Errors are *Error with ErrMalformed or ErrUnsupported.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, Errorf(ErrMalformed, "manifest is %d bytes, more than %d", len(b), MaxManifestSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, &Error{Reason: ErrMalformed, Detail: "manifest.json", Err: err}
	}
	if dec.More() || dec.InputOffset() != int64(len(b)) {
		return nil, Errorf(ErrMalformed, "manifest.json: data after the manifest")
	}
	if m.Format != FormatVersion {
		return nil, Errorf(ErrUnsupported, "manifest format %d (this device reads %d)", m.Format, FormatVersion)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	c, err := json.Marshal(&m)
	if err != nil || !bytes.Equal(c, b) {
		return nil, Errorf(ErrMalformed, "manifest.json is not in canonical form")
	}
	return &m, nil
}

// Validate checks the manifest's fields; errors are *Error with ErrMalformed.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error { return Errorf(ErrMalformed, format, args...) }
	if m.Format != FormatVersion {
		return Errorf(ErrUnsupported, "manifest format %d (this build writes %d)", m.Format, FormatVersion)
	}
	if !wordRE.MatchString(m.Name) {
		return bad("name %q is not a valid image name", m.Name)
	}
	if _, err := ParseVersion(m.Version); err != nil {
		return bad("%v", err)
	}
	if _, err := ParseVersion(m.MinVersion); err != nil {
		return bad("minVersion: %v", err)
	}
	if !wordRE.MatchString(m.Board) {
		return bad("board %q is not a valid board name", m.Board)
	}
	if len(m.Compatible) > 16 {
		return bad("%d compatible boards, at most 16", len(m.Compatible))
	}
	for _, c := range m.Compatible {
		if !wordRE.MatchString(c) {
			return bad("compatible board %q is not a valid board name", c)
		}
	}
	if m.LayoutVersion < 1 || m.LayoutVersion > 1<<20 {
		return bad("layoutVersion %d out of range", m.LayoutVersion)
	}
	if len(m.Parts) == 0 || len(m.Parts) > MaxParts {
		return bad("%d parts: 1 to %d expected", len(m.Parts), MaxParts)
	}
	seen := map[string]bool{}
	for i, p := range m.Parts {
		if p.Name != PartBoot && p.Name != PartSystem {
			return bad("parts[%d]: unknown part %q (boot or system)", i, p.Name)
		}
		if seen[p.Name] {
			return bad("parts[%d]: part %q twice", i, p.Name)
		}
		seen[p.Name] = true
		if p.Size <= 0 || p.Size > MaxPartSize {
			return bad("parts[%d] (%s): size %d out of range", i, p.Name, p.Size)
		}
		if !hexSumRE.MatchString(p.SHA256) {
			return bad("parts[%d] (%s): sha256 %q is not 64 lower-case hex digits", i, p.Name, p.SHA256)
		}
		if p.Patch != nil {
			if err := p.Patch.validate(p.Size); err != nil {
				return bad("parts[%d] (%s): patch: %v", i, p.Name, err)
			}
		}
	}
	if !seen[PartBoot] || !seen[PartSystem] {
		return bad("a release needs a boot and a system part")
	}
	return nil
}

func (p *Patch) validate(size int64) error {
	if len(p.Slots) == 0 || len(p.Slots) > 4 {
		return fmt.Errorf("%d slots, 1 to 4 expected", len(p.Slots))
	}
	if _, ok := p.Slots[p.From]; !ok {
		return fmt.Errorf("from %q is not one of its slots", p.From)
	}
	n := len(p.Slots[p.From])
	if n == 0 || n > MaxPatchLen {
		return fmt.Errorf("length %d out of range", n)
	}
	for s, v := range p.Slots {
		if !wordRE.MatchString(s) {
			return fmt.Errorf("slot name %q", s)
		}
		if len(v) != n {
			return fmt.Errorf("slot %s: %d bytes, slot %s has %d: variants must have one length", s, len(v), p.From, n)
		}
	}
	if p.Offset < 0 || p.Offset > size-int64(n) {
		return fmt.Errorf("offset %d + %d bytes is outside the part's %d bytes", p.Offset, n, size)
	}
	return nil
}

// Part returns the named part, or nil.
func (m *Manifest) Part(name string) *Part {
	for i := range m.Parts {
		if m.Parts[i].Name == name {
			return &m.Parts[i]
		}
	}
	return nil
}

// RunsOn reports whether the release is for board.
func (m *Manifest) RunsOn(board string) bool {
	if m.Board == board {
		return true
	}
	for _, c := range m.Compatible {
		if c == board {
			return true
		}
	}
	return false
}

// Signature is manifest.sig: which key signed the manifest and the ed25519 signature over
// manifest.json's bytes.
type Signature struct {
	KeyID     string `json:"keyId"`
	Signature []byte `json:"signature"` // base64 in JSON
}

func parseSignature(b []byte) (*Signature, error) {
	if len(b) > MaxSignatureSize {
		return nil, Errorf(ErrMalformed, "manifest.sig is %d bytes, more than %d", len(b), MaxSignatureSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Signature
	if err := dec.Decode(&s); err != nil {
		return nil, &Error{Reason: ErrMalformed, Detail: "manifest.sig", Err: err}
	}
	if dec.More() || dec.InputOffset() != int64(len(b)) {
		return nil, Errorf(ErrMalformed, "manifest.sig: data after the signature")
	}
	if !hexSumRE.MatchString(s.KeyID) {
		return nil, Errorf(ErrMalformed, "manifest.sig: key id %q is not 64 lower-case hex digits", s.KeyID)
	}
	if len(s.Signature) != 64 {
		return nil, Errorf(ErrMalformed, "manifest.sig: signature is %d bytes, not 64", len(s.Signature))
	}
	return &s, nil
}
