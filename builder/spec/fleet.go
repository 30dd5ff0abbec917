package spec

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/invopop/jsonschema"
)

// Fleet is the fleet server the devices of the image enroll with and report to.
type Fleet struct {
	// URL is the fleet server's base URL, https://HOST[:PORT][/PATH], without user
	// information, query or fragment. Required.
	URL string `yaml:"url" json:"url" jsonschema_description:"The fleet server's base URL, https://HOST[:PORT][/PATH], without user information, query or fragment. Required."`

	// CA is the path of a PEM bundle holding at least one CA certificate: baked into the image
	// as the only trust root for the fleet server. Relative to the spec file. Required.
	CA string `yaml:"ca" json:"ca" jsonschema_description:"Path of a PEM bundle holding at least one CA certificate, baked into the image as the only trust root for the fleet server. Relative to the spec file. Required."`

	// Heartbeat is how often a device reports to the fleet: a whole number of seconds written
	// as a Go duration ("30s", "2m"), 5s to 1h. Default 30s; the fleet's enrollment answer
	// may set another.
	Heartbeat Duration `yaml:"heartbeat,omitempty" json:"heartbeat,omitempty" jsonschema_description:"How often a device reports to the fleet: whole seconds written as a duration (30s, 2m), 5s to 1h. Default 30s; the fleet's enrollment answer may set another."`
}

// Duration is a length of time written as Go's time.ParseDuration reads it ("30s", "1m30s").
// Validate checks it; use Seconds on a validated spec.
type Duration string

// Limits and default of fleet.heartbeat.
const (
	DefaultHeartbeat Duration = "30s"
	MinHeartbeat              = 5 * time.Second
	MaxHeartbeat              = time.Hour
)

// durationPattern is the written form of a Duration; the JSON Schema uses it too.
const durationPattern = `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`

// Seconds returns the duration in whole seconds; 0 if it does not parse.
func (d Duration) Seconds() int {
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0
	}
	return int(v / time.Second)
}

// JSONSchema describes a Duration.
func (Duration) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{
		Type:        "string",
		Pattern:     durationPattern,
		Description: "A length of time such as 30s, 2m or 1m30s.",
	}
}

// JSONSchemaExtend adds the constraints Validate checks to the schema of Fleet.
func (Fleet) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "The fleet server devices enroll with and report to."
	s.Required = []string{"url", "ca"}
	u := prop(s, "url")
	u.Pattern, u.Format = `^https://[^/?#@\s]+(/[^?#\s]*)?$`, "uri"
	prop(s, "ca").MinLength = ptr(uint64(1))
}

// setDefaults fills in the heartbeat; a nil Fleet stays nil.
func (f *Fleet) setDefaults() {
	if f != nil && f.Heartbeat == "" {
		f.Heartbeat = DefaultHeartbeat
	}
}

// resolvePaths makes the CA path absolute against dir.
func (f *Fleet) resolvePaths(dir string) {
	if f != nil && f.CA != "" && !filepath.IsAbs(f.CA) {
		f.CA = filepath.Join(dir, f.CA)
	}
}

// fleet checks the fleet section; nil means the image has no fleet (devices run standalone).
func (v *validator) fleet(f *Fleet) {
	if f == nil {
		return
	}
	switch u, err := url.Parse(f.URL); {
	case f.URL == "":
		v.add("fleet.url", "must be set")
	case hasControl(f.URL) || strings.ContainsAny(f.URL, " \t"):
		v.addf("fleet.url", "%q contains a space or control character", f.URL)
	case err != nil:
		v.addf("fleet.url", "%q is not a valid URL", f.URL)
	case u.Scheme != "https":
		v.addf("fleet.url", "%q must use https: devices trust the fleet only through fleet.ca", f.URL)
	case u.Host == "" || u.Hostname() == "":
		v.addf("fleet.url", "%q has no host", f.URL)
	case u.User != nil:
		v.addf("fleet.url", "%q must not hold user information: devices authenticate with their certificate", f.URL)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(f.URL, "#"):
		v.addf("fleet.url", "%q must not have a query or fragment", f.URL)
	case u.Port() != "" && !validPort(u.Port()):
		v.addf("fleet.url", "%q has the invalid port %q", f.URL, u.Port())
	}
	switch {
	case f.CA == "":
		v.add("fleet.ca", "must be set: the PEM bundle of the CA that signed the fleet server's certificate")
	case hasControl(f.CA):
		v.addf("fleet.ca", "%q contains a control character", f.CA)
	}
	if f.Heartbeat == "" {
		v.add("fleet.heartbeat", "must be set")
		return
	}
	d, err := time.ParseDuration(string(f.Heartbeat))
	switch {
	case err != nil:
		v.addf("fleet.heartbeat", "%q is not a duration: write e.g. 30s, 2m or 1m30s", short(string(f.Heartbeat)))
	case d < MinHeartbeat || d > MaxHeartbeat:
		v.addf("fleet.heartbeat", "%s is out of range: %s to %s", f.Heartbeat, MinHeartbeat, MaxHeartbeat)
	case d%time.Second != 0:
		v.addf("fleet.heartbeat", "%s is not a whole number of seconds", f.Heartbeat)
	}
}

func validPort(p string) bool {
	var n int
	if _, err := fmt.Sscanf(p, "%d", &n); err != nil || fmt.Sprint(n) != p {
		return false
	}
	return n >= 1 && n <= 65535
}
