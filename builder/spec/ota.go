package spec

import (
	"fmt"
	"time"

	"github.com/invopop/jsonschema"
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
}

// Limits and default of ota.healthTimeout.
const (
	DefaultHealthTimeout Duration = "10m"
	MinHealthTimeout              = time.Minute
	MaxHealthTimeout              = 2 * time.Hour
	MaxTrustedKeys                = 16
)

// JSONSchemaExtend describes OTA in the JSON Schema.
func (OTA) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "Signed over-the-air updates: the key that signs NAME-BOARD.update and the keys devices trust."
	prop(s, "trustedKeys").MaxItems = ptr(uint64(MaxTrustedKeys))
}

// setDefaults fills in the health timeout; a nil OTA stays nil.
func (o *OTA) setDefaults() {
	if o != nil && o.HealthTimeout == "" {
		o.HealthTimeout = DefaultHealthTimeout
	}
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

// ota checks the ota section; nil means no OTA.
func (v *validator) ota(o *OTA) {
	if o == nil {
		return
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
