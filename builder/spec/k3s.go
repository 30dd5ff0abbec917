package spec

import (
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/edgeimg/edgeimg/images"
	"github.com/invopop/jsonschema"
)

// K3s says which K3s the image runs. Without a k3s section the image has no K3s at all (and
// manifests, images and registries.writeRegistriesYaml are errors).
type K3s struct {
	// Version is the K3s release ("v1.31.4+k3s1"); the repository must have its system
	// image list (images/k3s/VERSION.txt). Default DefaultK3sVersion.
	Version string `yaml:"version,omitempty" json:"version,omitempty" jsonschema_description:"The K3s release, e.g. v1.31.4+k3s1; edgeimg must have its system image list. Default v1.31.4+k3s1."`

	// Binary is the self-extracting linux/arm64 k3s executable; by default the release's
	// k3s-arm64 asset.
	Binary K3sBinary `yaml:"binary,omitempty" json:"binary,omitzero" jsonschema_description:"The self-extracting linux/arm64 k3s executable; by default the release's k3s-arm64 asset on GitHub."`

	// Role is the K3s role a device starts in: server or agent. The fleet may assign
	// another once the device enrolls. An agent needs config.server (the https URL of the
	// K3s server it joins) and config.token or config.token-file. Default server.
	Role string `yaml:"role,omitempty" json:"role,omitempty" jsonschema_description:"The K3s role a device starts in: server or agent (the fleet may assign another once the device enrolls). An agent needs config.server (https://HOST:6443) and config.token or config.token-file. Default server."`

	// Config is merged into /etc/rancher/k3s/config.yaml: K3s flags without their leading
	// dashes ("node-label", "disable", …). Its keys win over the builder's base config.
	Config map[string]any `yaml:"config,omitempty" json:"config,omitempty" jsonschema_description:"Merged into /etc/rancher/k3s/config.yaml: K3s flags without their dashes (node-label, disable, …); they win over the builder's base config."`
}

// K3sBinary is where the k3s executable comes from.
type K3sBinary struct {
	// URL is an http(s) URL of the k3s-arm64 executable. Default: the release asset,
	// https://github.com/k3s-io/k3s/releases/download/VERSION/k3s-arm64.
	URL string `yaml:"url,omitempty" json:"url,omitempty" jsonschema_description:"http(s) URL of the k3s-arm64 executable. Default: the release asset on GitHub."`

	// SHA256 is the lower-case hex SHA-256 of the executable. Without it the builder checks
	// the download against sha256sum-arm64.txt in the same directory as URL (what every K3s
	// release publishes) and records the digest in edgeimg.lock.
	SHA256 string `yaml:"sha256,omitempty" json:"sha256,omitempty" jsonschema_description:"Lower-case hex SHA-256 of the executable. Default: the k3s-arm64 line of sha256sum-arm64.txt beside url, recorded in edgeimg.lock."`
}

// CertManager says whether cert-manager is installed with the K3s payload.
type CertManager struct {
	// Version is the cert-manager release ("v1.16.2"): edgeimg ships its chart and image
	// list (manifests/certmanager, images/certmanager). Default DefaultCertManagerVersion.
	Version string `yaml:"version,omitempty" json:"version,omitempty" jsonschema_description:"The cert-manager release, e.g. v1.16.2; edgeimg must have its chart and image list. Default v1.16.2."`

	// Enabled installs cert-manager (air-gapped: the chart inside a K3s HelmChart, its
	// images pre-pulled) and a self-signed CA ClusterIssuer, edgeimg-ca. Default true when
	// the spec has a k3s section; enabled: false turns it off.
	Enabled *bool `yaml:"enabled,omitempty" json:"enabled,omitempty" jsonschema_description:"Installs cert-manager (air-gapped) and the self-signed CA ClusterIssuer edgeimg-ca. Default true with k3s; false turns it off."`
}

// Hardware describes the board variant the image is for.
type Hardware struct {
	// RAM is the memory of the board variant the memory plan is checked against (rpi4:
	// 2GiB, 4GiB or 8GiB). Default 4GiB.
	RAM Size `yaml:"ram,omitempty" json:"ram,omitempty" jsonschema_description:"Memory of the board variant the memory plan is checked against (rpi4: 2GiB, 4GiB or 8GiB). Default 4GiB."`
}

// PlanOptions tune the memory plan check.
type PlanOptions struct {
	// AllowOvercommit lets the build go on when the workloads' memory requests at their
	// HPAs' maximum replicas do not fit hardware.ram. Default false.
	AllowOvercommit bool `yaml:"allowOvercommit,omitempty" json:"allowOvercommit,omitempty" jsonschema_description:"Lets the build go on when the memory requests at the HPAs' maximum replicas do not fit hardware.ram. Default false."`
}

// Registries says where image pulls go, for build sites with their own registry.
type Registries struct {
	// Mirrors maps a registry host ("docker.io", "ghcr.io") to the http(s) URL of a mirror
	// every pull of its images goes to; images keep their own names in the image.
	Mirrors map[string]string `yaml:"mirrors,omitempty" json:"mirrors,omitempty" jsonschema_description:"Maps a registry host (docker.io, ghcr.io) to the http(s) URL of a mirror its pulls go to; images keep their own names."`

	// Auth holds credentials per registry host (a mirror's host:port too); the docker config
	// (~/.docker/config.json) is used for hosts not listed. They are never written into the
	// image.
	Auth map[string]RegistryAuth `yaml:"auth,omitempty" json:"auth,omitempty" jsonschema_description:"Credentials per registry host (a mirror's host:port too); the docker config is used for other hosts. Never written into the image."`

	// WriteRegistriesYaml writes the mirrors into the image's /etc/rancher/k3s/registries.yaml,
	// so that devices at the site pull through the same mirrors. Default false.
	WriteRegistriesYaml bool `yaml:"writeRegistriesYaml,omitempty" json:"writeRegistriesYaml,omitempty" jsonschema_description:"Writes the mirrors into the image's /etc/rancher/k3s/registries.yaml (credentials are not written). Default false."`
}

// RegistryAuth are the credentials of one registry: username and password, or auth, or an
// identity token.
type RegistryAuth struct {
	// Username is the user name, with Password.
	Username string `yaml:"username,omitempty" json:"username,omitempty" jsonschema_description:"User name, with password."`
	// Password is the password or access token, with Username.
	Password string `yaml:"password,omitempty" json:"password,omitempty" jsonschema_description:"Password or access token, with username."`
	// Auth is base64 of "username:password", as in a docker config.
	Auth string `yaml:"auth,omitempty" json:"auth,omitempty" jsonschema_description:"base64 of username:password, as in a docker config."`
	// IdentityToken is an OAuth2 refresh token, as in a docker config.
	IdentityToken string `yaml:"identityToken,omitempty" json:"identityToken,omitempty" jsonschema_description:"An OAuth2 refresh token, as in a docker config."`
}

// Defaults of the K3s payload.
const (
	DefaultK3sVersion         = "v1.31.4+k3s1"
	DefaultK3sRole            = "server"
	DefaultCertManagerVersion = "v1.16.2"
	DefaultRAM                = 4 * GiB
	// K3sReleases is where K3s releases are downloaded from by default.
	K3sReleases = "https://github.com/k3s-io/k3s/releases/download"
	// K3sAsset is the release asset of the linux/arm64 executable, and K3sChecksums the file of
	// its checksums.
	K3sAsset     = "k3s-arm64"
	K3sChecksums = "sha256sum-arm64.txt"
)

// K3sRoles are the values k3s.role may take.
var K3sRoles = []string{"server", "agent"}

// RAMSizes are the board variants hardware.ram may name, per board.
var RAMSizes = map[string][]Size{"rpi4": {2 * GiB, 4 * GiB, 8 * GiB}}

// DefaultK3sURL returns the release asset URL of the k3s executable of version.
func DefaultK3sURL(version string) string {
	return K3sReleases + "/" + version + "/" + K3sAsset
}

const (
	k3sVersionPattern  = `^v[0-9]+\.[0-9]+\.[0-9]+\+k3s[0-9]+$`
	semverPattern      = `^v[0-9]+\.[0-9]+\.[0-9]+$`
	registryPattern    = `^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$`
	k3sConfigKeyPatern = `^[a-z0-9][a-z0-9-]*$`
)

var (
	k3sVersionRE   = regexp.MustCompile(k3sVersionPattern)
	semverRE       = regexp.MustCompile(semverPattern)
	registryRE     = regexp.MustCompile(registryPattern)
	k3sConfigKeyRE = regexp.MustCompile(k3sConfigKeyPatern)
)

// setK3sDefaults fills in the K3s payload's defaults; a spec without k3s is left as it is.
func (s *Spec) setK3sDefaults() {
	k := s.K3s
	if k == nil {
		return
	}
	if s.Hardware.RAM == 0 {
		s.Hardware.RAM = DefaultRAM
	}
	if s.CertManager.Version == "" {
		s.CertManager.Version = DefaultCertManagerVersion
	}
	if s.CertManager.Enabled == nil {
		s.CertManager.Enabled = ptr(true)
	}
	if k.Version == "" {
		k.Version = DefaultK3sVersion
	}
	if k.Role == "" {
		k.Role = DefaultK3sRole
	}
	if k.Binary.URL == "" {
		k.Binary.URL = DefaultK3sURL(k.Version)
	}
}

// resolveK3sPaths makes the manifests' paths absolute.
func (s *Spec) resolveK3sPaths(abs func(string) string) {
	for i := range s.Manifests {
		s.Manifests[i] = abs(s.Manifests[i])
	}
}

// k3s checks the K3s payload's fields.
func (v *validator) k3s(s *Spec) {
	if s.K3s == nil {
		if len(s.Manifests) > 0 {
			v.add("manifests", "needs a k3s section: without it the image has no K3s to deploy them (write `k3s: {}` for the defaults)")
		}
		if len(s.Images) > 0 {
			v.add("images", "needs a k3s section: without it the image has no K3s to run them (write `k3s: {}` for the defaults)")
		}
		if s.Registries.WriteRegistriesYaml {
			v.add("registries.writeRegistriesYaml", "needs a k3s section: without it the image has no K3s")
		}
	} else {
		v.k3sSection(s.K3s)
	}
	for i, m := range s.Manifests {
		f := fmt.Sprintf("manifests[%d]", i)
		switch {
		case m == "":
			v.add(f, "must not be empty")
		case hasControl(m):
			v.addf(f, "%q contains a control character", m)
		case isURL(m):
			v.addf(f, "%q is a URL: manifests are local files or directories", m)
		}
	}
	seen := map[string]int{}
	for i, r := range s.Images {
		f := fmt.Sprintf("images[%d]", i)
		ref, err := images.ParseReference(r)
		if err != nil {
			v.addf(f, "%v", err)
			continue
		}
		n := images.Normalize(ref)
		if j, dup := seen[n]; dup {
			v.addf(f, "%q is already images[%d]", r, j)
		}
		seen[n] = i
	}
	if s.K3s != nil {
		v.certManager(s.CertManager)
		v.hardware(s)
	}
	v.registries(s.Registries)
}

func (v *validator) certManager(cm CertManager) {
	if cm.Version == "" {
		v.add("certManager.version", "must be set")
	} else if !semverRE.MatchString(cm.Version) {
		v.addf("certManager.version", "%q is not a release version such as v1.16.2", cm.Version)
	} else if cm.Enabled != nil && *cm.Enabled && !slices.Contains(images.CertManagerVersions(), cm.Version) {
		v.addf("certManager.version", "%q: edgeimg has no chart and image list for it (supported: %s; or set enabled: false)", cm.Version, strings.Join(images.CertManagerVersions(), ", "))
	}
}

func (v *validator) k3sSection(k *K3s) {
	switch {
	case k.Version == "":
		v.add("k3s.version", "must be set")
	case !k3sVersionRE.MatchString(k.Version):
		v.addf("k3s.version", "%q is not a K3s release such as %s", k.Version, DefaultK3sVersion)
	case !slices.Contains(images.K3sVersions(), k.Version):
		v.addf("k3s.version", "%q: edgeimg has no system image list for it (supported: %s)", k.Version, strings.Join(images.K3sVersions(), ", "))
	}
	switch u, err := url.Parse(k.Binary.URL); {
	case k.Binary.URL == "":
		v.add("k3s.binary.url", "must be set")
	case hasControl(k.Binary.URL) || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		v.addf("k3s.binary.url", "%q is not an http(s) URL", k.Binary.URL)
	case u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(u.Path, "/") || u.Path == "":
		v.addf("k3s.binary.url", "%q does not name a file (no query, fragment or trailing slash)", k.Binary.URL)
	}
	if k.Binary.SHA256 != "" && !sha256RE.MatchString(k.Binary.SHA256) {
		v.addf("k3s.binary.sha256", "%q is not a lower-case hex SHA-256 (64 digits)", k.Binary.SHA256)
	}
	switch {
	case k.Role == "":
		v.add("k3s.role", "must be set")
	case !slices.Contains(K3sRoles, k.Role):
		v.addf("k3s.role", "%q is not one of %s", k.Role, strings.Join(K3sRoles, ", "))
	}
	keys := make([]string, 0, len(k.Config))
	for key := range k.Config {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		f := "k3s.config." + key
		switch {
		case !k3sConfigKeyRE.MatchString(key):
			v.addf("k3s.config", "%q is not a K3s flag name: lower-case letters, digits and '-', without leading dashes", key)
		case key == "write-kubeconfig" || key == "data-dir" || key == "private-registry":
			if p, ok := k.Config[key].(string); !ok || !(strings.HasPrefix(p, "/var/") || strings.HasPrefix(p, "/run/")) {
				v.addf(f, "%v: must be a path under /var or /run (the root filesystem is read-only)", k.Config[key])
			}
		case k.Role == "agent" && (key == "server" || key == "token" || key == "token-file"):
			// What an agent image joins until the fleet assigns a role (checked below).
		case key == "server" || key == "token" || key == "agent-token" || key == "token-file":
			v.addf(f, "is set on the device by edgeimg-agent from the role the fleet assigns (config.yaml.d), not in the image (only an image with k3s.role: agent names the server it joins, with server and token)")
		}
	}
	if k.Role == "agent" {
		v.k3sAgent(k.Config)
	}
}

// k3sAgent checks what an image whose default role is agent joins: config.server, an https
// URL, and config.token or config.token-file.
func (v *validator) k3sAgent(cfg map[string]any) {
	server, hasServer := cfg["server"]
	switch u, ok := server.(string); {
	case !hasServer:
		v.add("k3s.config.server", "must be set with k3s.role: agent: the https://HOST:6443 URL of the K3s server the device joins")
	case !ok || hasControl(u) || strings.ContainsAny(u, " \"'") || !isHTTPSURL(u):
		v.addf("k3s.config.server", "%v is not an https://HOST[:PORT] URL (k3s.role: agent joins it)", server)
	}
	token, hasToken := cfg["token"]
	file, hasFile := cfg["token-file"]
	switch t, ok := token.(string); {
	case hasToken && hasFile:
		v.add("k3s.config.token", "and k3s.config.token-file are both set: give one")
	case !hasToken && !hasFile:
		v.add("k3s.config.token", "must be set (or k3s.config.token-file) with k3s.role: agent: the join token of the K3s server")
	case hasToken && (!ok || t == "" || hasControl(t) || strings.ContainsAny(t, " \"'")):
		v.add("k3s.config.token", "must be a non-empty string without spaces or quotes") // never echo a secret
	}
	if f, ok := file.(string); hasFile && (!ok || !strings.HasPrefix(f, "/") || hasControl(f)) {
		v.addf("k3s.config.token-file", "%v is not an absolute path", file)
	}
}

// isHTTPSURL reports whether u is https://HOST[:PORT] with nothing but an optional path.
func isHTTPSURL(u string) bool {
	p, err := url.Parse(u)
	return err == nil && p.Scheme == "https" && p.Host != "" && p.User == nil && p.RawQuery == "" && p.Fragment == ""
}

func (v *validator) hardware(s *Spec) {
	ram := s.Hardware.RAM
	if ram == 0 {
		v.add("hardware.ram", "must be set")
		return
	}
	if sizes, ok := RAMSizes[s.Board]; ok && !slices.Contains(sizes, ram) {
		names := make([]string, len(sizes))
		for i, z := range sizes {
			names[i] = z.String()
		}
		v.addf("hardware.ram", "%s is not a variant of %s (%s)", ram, s.Board, strings.Join(names, ", "))
	}
}

func (v *validator) registries(r Registries) {
	for _, host := range sortedKeys(r.Mirrors) {
		f := "registries.mirrors." + host
		if !registryRE.MatchString(host) {
			v.addf("registries.mirrors", "%q is not a registry host[:port] such as docker.io", host)
			continue
		}
		raw := r.Mirrors[host]
		u, err := url.Parse(raw)
		if err != nil || hasControl(raw) || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			v.addf(f, "%q is not an http(s)://host[:port][/prefix] URL", raw)
		}
	}
	for _, host := range sortedKeys(r.Auth) {
		f := "registries.auth." + host
		if !registryRE.MatchString(host) {
			v.addf("registries.auth", "%q is not a registry host[:port] such as ghcr.io", host)
			continue
		}
		a := r.Auth[host]
		switch {
		case a.Username != "" && a.Password == "":
			v.add(f+".password", "must be set with username")
		case a.Password != "" && a.Username == "":
			v.add(f+".username", "must be set with password")
		case a.Username == "" && a.Auth == "" && a.IdentityToken == "":
			v.add(f, "has no credentials: set username and password, auth or identityToken")
		}
	}
	if r.WriteRegistriesYaml && len(r.Mirrors) == 0 {
		v.add("registries.writeRegistriesYaml", "is set but registries.mirrors is empty")
	}
}

func sortedKeys[T any](m map[string]T) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ManifestPaths returns the manifests of the spec, made absolute against Dir when Load left
// them relative (a spec from Decode).
func (s *Spec) ManifestPaths() []string {
	out := make([]string, len(s.Manifests))
	for i, m := range s.Manifests {
		if !filepath.IsAbs(m) && s.Dir != "" {
			m = filepath.Join(s.Dir, m)
		}
		out[i] = m
	}
	return out
}

// JSONSchemaExtend adds the constraints Validate checks to the schema of K3s.
func (K3s) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "The K3s the image runs; without this section the image has no K3s."
	prop(s, "version").Pattern = k3sVersionPattern
	prop(s, "role").Enum = strings2any(K3sRoles)
	c := prop(s, "config")
	c.PropertyNames = &jsonschema.Schema{Pattern: k3sConfigKeyPatern}
}

// JSONSchemaExtend adds the constraints Validate checks to the schema of K3sBinary.
func (K3sBinary) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "Where the k3s executable comes from."
	u := prop(s, "url")
	u.Pattern, u.Format = `^https?://`, "uri"
	prop(s, "sha256").Pattern = sha256Pattern
}

// JSONSchemaExtend adds the constraints Validate checks to the schema of CertManager.
func (CertManager) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "cert-manager, installed air-gapped with the K3s payload (on by default), with a self-signed CA ClusterIssuer."
	prop(s, "version").Pattern = semverPattern
}

// JSONSchemaExtend describes Hardware.
func (Hardware) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "The board variant the image is for."
}

// JSONSchemaExtend describes PlanOptions.
func (PlanOptions) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "How the memory plan is checked."
}

// JSONSchemaExtend adds the constraints Validate checks to the schema of Registries.
func (Registries) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "Where image pulls go, for build sites with their own registry."
	prop(s, "mirrors").PropertyNames = &jsonschema.Schema{Pattern: registryPattern}
	prop(s, "auth").PropertyNames = &jsonschema.Schema{Pattern: registryPattern}
}

// JSONSchemaExtend describes RegistryAuth.
func (RegistryAuth) JSONSchemaExtend(s *jsonschema.Schema) {
	s.Description = "Credentials of one registry: username and password, auth, or identityToken."
}
