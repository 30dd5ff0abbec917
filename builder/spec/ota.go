package spec

import (
	"fmt"
	"time"

	"github.com/invopop/jsonschema"

	"github.com/edgeimg/edgeimg/ota/bundle"
)

// OTA configures signed over-the-air updates. Without an ota section (or without
// ota.signingKey) the build writes no update bundle and says so in its report.
type OTA struct {
	// SigningKey is the path of the ed25519 private key (PEM PKCS#8, from `edgeimg keys
	// create`) that signs NAME-BOARD.update. Relative to the spec file. Without it the build
	// writes no bundle.
	SigningKey string `yaml:"signingKey,omitempty" json:"signingKey,omitempty" jsonschema_description:"Path of the ed25519 private key (PEM PKCS#8, from edgeimg keys create) that signs NAME-BOARD.update. Relative to the spec file. Without it no bundle is written."`

	// TrustedKeys are paths of ed25519 public keys (PEM) baked into the image: the device
	// accepts updates signed by any of them, so a signing key can be rotated by listing the
	// old and the new key. Default: the public key of SigningKey. Relative to the spec file.
	TrustedKeys []string `yaml:"trustedKeys,omitempty" json:"trustedKeys,omitempty" jsonschema_description:"Paths of ed25519 public keys (PEM) baked into the image; the device accepts updates signed by any of them (list old and new to rotate). Default: the signing key's public key. Relative to the spec file."`

	// HealthTimeout is how long a trial boot of an update may take to become healthy (fleet
	// reached, K3s node Ready, workloads available) before the device returns to the old
	// slot: 1m to 2h, whole seconds. Default 10m.
	HealthTimeout Duration `yaml:"healthTimeout,omitempty" json:"healthTimeout,omitempty" jsonschema_description:"How long a trial boot may take to become healthy before the device returns to the old slot: 1m to 2h, whole seconds. Default 10m."`

	// MinVersion is the oldest installed version this release may update from: a device
	// running an older one refuses the bundle (install an intermediate release first). At
	// most the spec's version. Default "0": any.
	MinVersion string `yaml:"minVersion,omitempty" json:"minVersion,omitempty" jsonschema_description:"Oldest installed version this release may update from; devices on an older one refuse it. At most version. Default 0 (any)."`

	// Rollback marks the release a rollback: devices install it even when it is not newer
	// than the version they run. Default false: devices refuse a release that is not newer.
	Rollback bool `yaml:"rollback,omitempty" json:"rollback,omitempty" jsonschema_description:"Mark the release a rollback: devices install it even when it is not newer than what they run. Default false."`
}

// Limits and default of ota.healthTimeout.
const (
	DefaultHealthTimeout Duration = "10m"
	DefaultMinVersion             = "0"
	MinHealthTimeout              = time.Minute
	MaxHealthTimeout              = 2 * time.Hour
	MaxTrustedKeys                = 16
)

// JSONSchemaExtend describes OTA in the JSON Schema.
func (OTA) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "Signed over-the-air updates: the key that signs NAME-BOARD.update and the keys devices trust."
	prop(s, "trustedKeys").MaxItems = ptr(uint64(MaxTrustedKeys))
}

// setDefaults fills in the health timeout and the minimum version; a nil OTA stays nil.
func (o *OTA) setDefaults() {
	if o == nil {
		return
	}
	if o.HealthTimeout == "" {
		o.HealthTimeout = DefaultHealthTimeout
	}
	if o.MinVersion == "" {
		o.MinVersion = DefaultMinVersion
	}
}

// HealthTimeoutSeconds returns ota.healthTimeout in whole seconds (after validation).
func (o *OTA) HealthTimeoutSeconds() int64 {
	d, _ := time.ParseDuration(string(o.HealthTimeout))
	return int64(d / time.Second)
}

// resolvePaths makes the key paths absolute with abs.
func (o *OTA) resolvePaths(abs func(string) string) {
	if o == nil {
		return
	}
	o.SigningKey = abs(o.SigningKey)
	for i := range o.TrustedKeys {
		o.TrustedKeys[i] = abs(o.TrustedKeys[i])
	}
}

// ota checks the ota section of a spec of the given version; nil means no OTA.
func (v *validator) ota(o *OTA, version string) {
	if o == nil {
		return
	}
	switch {
	case o.MinVersion == "":
		v.add("ota.minVersion", "must be set")
	default:
		if _, err := bundle.ParseVersion(o.MinVersion); err != nil {
			v.addf("ota.minVersion", "%q is not a valid version: use dot-separated decimal numbers such as 0, 1 or 2.3", short(o.MinVersion))
		} else if c, err := bundle.CompareVersions(o.MinVersion, version); err == nil && c > 0 {
			v.addf("ota.minVersion", "%s is above the release's version %s: no device could install it", o.MinVersion, version)
		}
	}
	if hasControl(o.SigningKey) {
		v.addf("ota.signingKey", "%q contains a control character", o.SigningKey)
	}
	if len(o.TrustedKeys) > MaxTrustedKeys {
		v.addf("ota.trustedKeys", "%d keys, at most %d", len(o.TrustedKeys), MaxTrustedKeys)
	}
	for i, k := range o.TrustedKeys {
		if k == "" || hasControl(k) {
			v.addf(fmt.Sprintf("ota.trustedKeys[%d]", i), "%q is not a path", k)
		}
	}
	if o.SigningKey == "" && len(o.TrustedKeys) == 0 {
		v.add("ota", "set signingKey, trustedKeys or both: without either, devices could never accept an update")
	}
	if o.HealthTimeout == "" {
		v.add("ota.healthTimeout", "must be set")
		return
	}
	d, err := time.ParseDuration(string(o.HealthTimeout))
	switch {
	case err != nil:
		v.addf("ota.healthTimeout", "%q is not a duration: write e.g. 10m or 1m30s", short(string(o.HealthTimeout)))
	case d < MinHealthTimeout || d > MaxHealthTimeout:
		v.addf("ota.healthTimeout", "%s is out of range: %s to %s", o.HealthTimeout, MinHealthTimeout, MaxHealthTimeout)
	case d%time.Second != 0:
		v.addf("ota.healthTimeout", "%s is not a whole number of seconds", o.HealthTimeout)
	}
}
