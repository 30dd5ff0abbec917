package spec

import "path/filepath"

// Spec is the content of edgeimg.yaml. Load or Decode it, apply the board's defaults with
// SetDefaults, then check it with Validate.
//
// New top-level sections (k3s, manifests, images, fleet, ota, …) are added as further fields;
// unknown fields are errors, so a spec never silently ignores what it does not understand.
type Spec struct {
	// Name names the outputs (NAME-BOARD.img, …): lower-case letters, digits and '-', starting
	// with a letter or digit, at most 63 characters. Required.
	Name string `yaml:"name" json:"name" jsonschema_description:"Names the outputs (NAME-BOARD.img, …): lower-case letters, digits and '-', starting with a letter or digit, at most 63 characters. Required."`

	// Board is the hardware the image is for (one of KnownBoards, e.g. "rpi4"). The --board
	// flag overrides it.
	Board string `yaml:"board,omitempty" json:"board,omitempty" jsonschema_description:"The hardware the image is for, e.g. rpi4. The --board flag overrides it."`

	// Version is the release version of the image: dot-separated decimal numbers ("1",
	// "2.3", "2024.11.25"), compared numerically component by component. Each release must
	// have a higher version than the last, as OTA updates refuse to go backwards. Default "0".
	Version string `yaml:"version,omitempty" json:"version,omitempty" jsonschema_description:"Release version: dot-separated decimal numbers (1, 2.3, 2024.11.25), compared numerically; each release must be higher than the last. Default 0."`

	// Base is the operating system disk image the build starts from; empty means the board's
	// default image.
	Base Base `yaml:"base,omitempty" json:"base,omitzero" jsonschema_description:"The operating system disk image the build starts from; empty means the board's default image."`

	// Overlays are directory trees laid over the root filesystem, in order: a later overlay
	// replaces files of an earlier one. Relative paths are relative to the spec file.
	Overlays []string `yaml:"overlays,omitempty" json:"overlays,omitempty" jsonschema_description:"Directory trees laid over the root filesystem, in order (later ones win). Relative paths are relative to the spec file."`

	// Users are the image's login users.
	Users []User `yaml:"users,omitempty" json:"users,omitempty" jsonschema_description:"The image's login users."`

	// Hostname is the default host name of a device: an RFC 1123 label in lower case (it is
	// also the K3s node name). Empty keeps the base image's.
	Hostname string `yaml:"hostname,omitempty" json:"hostname,omitempty" jsonschema_description:"Default host name: an RFC 1123 label in lower case (also the K3s node name). Empty keeps the base image's."`

	// Layout holds partition sizes; sizes left out come from the board.
	Layout Layout `yaml:"layout,omitempty" json:"layout,omitzero" jsonschema_description:"Partition sizes; sizes left out come from the board."`

	// Output says where and how the image files are written.
	Output Output `yaml:"output,omitempty" json:"output,omitzero" jsonschema_description:"Where and how the image files are written."`

	// Fleet is the fleet server the devices enroll with and report to (see fleet.go); without
	// it the devices run K3s standalone and do not enroll.
	Fleet *Fleet `yaml:"fleet,omitempty" json:"fleet,omitempty" jsonschema_description:"The fleet server devices enroll with and report to; without it devices run K3s standalone and do not enroll."`

	// K3s installs K3s with its air-gapped payload (see k3s.go); without it the image has no
	// K3s, and manifests and images are errors.
	K3s *K3s `yaml:"k3s,omitempty" json:"k3s,omitempty" jsonschema_description:"The K3s the image runs (k3s: {} for the defaults); without it the image has no K3s."`

	// Manifests are files or directories of Kubernetes YAML (multi-document; a directory's
	// *.yaml and *.yml files) that K3s deploys at boot. Relative to the spec file.
	Manifests []string `yaml:"manifests,omitempty" json:"manifests,omitempty" jsonschema_description:"Files or directories of Kubernetes YAML (multi-document) K3s deploys at boot. Relative to the spec file."`

	// Images are extra images shipped for linux/arm64; those the manifests use are found
	// automatically. Each is pinned by a version tag or a digest, never latest.
	Images []string `yaml:"images,omitempty" json:"images,omitempty" jsonschema_description:"Extra images shipped for linux/arm64 (those the manifests use are found automatically); pinned by tag or digest, never latest."`

	// CertManager says whether cert-manager is installed.
	CertManager CertManager `yaml:"certManager,omitempty" json:"certManager,omitzero" jsonschema_description:"cert-manager, installed air-gapped with the K3s payload (on by default with k3s), with a self-signed CA ClusterIssuer."`

	// Hardware is the board variant the memory plan is checked against.
	Hardware Hardware `yaml:"hardware,omitempty" json:"hardware,omitzero" jsonschema_description:"The board variant the memory plan is checked against."`

	// Plan tunes the memory plan check.
	Plan PlanOptions `yaml:"plan,omitempty" json:"plan,omitzero" jsonschema_description:"How the memory plan is checked."`

	// Registries says where image pulls go (mirrors, credentials).
	Registries Registries `yaml:"registries,omitempty" json:"registries,omitzero" jsonschema_description:"Where image pulls go: mirrors and credentials, for build sites with their own registry."`

	// OTA configures signed over-the-air updates (see ota.go); without it the build writes
	// no update bundle and devices accept none.
	OTA *OTA `yaml:"ota,omitempty" json:"ota,omitempty" jsonschema_description:"Signed over-the-air updates: signing key, trusted keys, trial-boot health timeout. Without it no update bundle is written."`

	// Dir is the absolute directory of the spec file, against which its relative paths were
	// resolved; empty for a spec that did not come from a file (Decode).
	Dir string `yaml:"-" json:"-"`

	// File is the path the spec was read from, as given to Load, or the name given to Decode.
	File string `yaml:"-" json:"-"`
}

// Base is the operating system disk image a build starts from.
type Base struct {
	// Image is a local path or an http(s) URL of a raw disk image, optionally compressed:
	// .img, .img.xz, .img.zst or .img.gz. Relative paths are relative to the spec file.
	Image string `yaml:"image,omitempty" json:"image,omitempty" jsonschema_description:"Local path or http(s) URL of a disk image: .img, .img.xz, .img.zst or .img.gz. Relative paths are relative to the spec file."`

	// SHA256 is the lower-case hex SHA-256 of the file Image names (compressed as it is
	// downloaded or stored). Required for URLs; checked for local paths when given.
	SHA256 string `yaml:"sha256,omitempty" json:"sha256,omitempty" jsonschema_description:"Lower-case hex SHA-256 of the file as downloaded or stored (compressed). Required for URLs; checked for local paths when given."`
}

// User is a login user of the image.
type User struct {
	// Name is the user name: a lower-case letter or '_', then lower-case letters, digits, '_'
	// or '-', at most 32 characters. System names such as root are reserved.
	Name string `yaml:"name" json:"name" jsonschema_description:"User name: a lower-case letter or _, then lower-case letters, digits, _ or -, at most 32 characters. System names such as root are reserved."`

	// UID is the numeric user id, 1000 to 59999; unset lets the builder assign one.
	UID *int `yaml:"uid,omitempty" json:"uid,omitempty" jsonschema_description:"Numeric user id, 1000 to 59999; unset lets the builder assign one."`

	// Groups are supplementary groups the user belongs to (e.g. sudo).
	Groups []string `yaml:"groups,omitempty" json:"groups,omitempty" jsonschema_description:"Supplementary groups the user belongs to, e.g. sudo."`

	// Shell is the login shell, an absolute path. Default /bin/bash.
	Shell string `yaml:"shell,omitempty" json:"shell,omitempty" jsonschema_description:"Login shell, an absolute path. Default /bin/bash."`

	// SSHAuthorizedKeys are public keys allowed to log in as the user, one authorized_keys
	// line each without options: TYPE BASE64 [COMMENT], TYPE being ssh-ed25519, ssh-rsa,
	// ecdsa-sha2-* or sk-*.
	SSHAuthorizedKeys []string `yaml:"sshAuthorizedKeys,omitempty" json:"sshAuthorizedKeys,omitempty" jsonschema_description:"Public keys allowed to log in as the user, one authorized_keys line each without options: TYPE BASE64 [COMMENT] (ssh-ed25519, ssh-rsa, ecdsa-sha2-*, sk-*)."`

	// PasswordHash is a crypt(3) hash ($y$…, $6$…, $5$…, $2b$…) of the user's password, as
	// made by `mkpasswd -m yescrypt`; empty locks password login.
	PasswordHash string `yaml:"passwordHash,omitempty" json:"passwordHash,omitempty" jsonschema_description:"crypt(3) hash of the password ($y$…, $6$…, $5$…, $2b$…), e.g. from mkpasswd -m yescrypt; empty locks password login."`
}

// Layout holds the sizes of the image's partitions. Each is a whole number of MiB.
type Layout struct {
	// BootSize is the size of each boot partition (FAT); at least 64MiB.
	BootSize Size `yaml:"bootSize,omitempty" json:"bootSize,omitempty" jsonschema_description:"Size of each boot partition (FAT), at least 64MiB, e.g. 256MiB."`

	// SystemSize is the size of each of the system slots A and B; at least 256MiB.
	SystemSize Size `yaml:"systemSize,omitempty" json:"systemSize,omitempty" jsonschema_description:"Size of each of the system slots A and B, at least 256MiB, e.g. 2GiB."`

	// DataMinSize is the size of the data partition in the image; it grows to fill the card
	// on first boot. At least 64MiB.
	DataMinSize Size `yaml:"dataMinSize,omitempty" json:"dataMinSize,omitempty" jsonschema_description:"Size of the data partition in the image (it grows to fill the card on first boot), at least 64MiB."`
}

// Output says where and how the image files are written.
type Output struct {
	// Dir is the directory the outputs are written to; relative to the spec file. Default
	// "out". The -o flag overrides it.
	Dir string `yaml:"dir,omitempty" json:"dir,omitempty" jsonschema_description:"Directory the outputs are written to, relative to the spec file. Default out. The -o flag overrides it."`

	// Compress is the compression of the distributed image: none, zstd or xz. Default zstd.
	Compress string `yaml:"compress,omitempty" json:"compress,omitempty" jsonschema_description:"Compression of the distributed image: none, zstd or xz. Default zstd."`
}

// KnownBoards are the board names a spec may name. Boards register here as they are added.
var KnownBoards = []string{"rpi4"}

// Compressions are the values Output.Compress may take.
var Compressions = []string{"none", "zstd", "xz"}

// Defaults a spec does not set itself.
const (
	DefaultVersion   = "0"
	DefaultCompress  = "zstd"
	DefaultOutputDir = "out"
	DefaultShell     = "/bin/bash"
)

// Defaults are the values SetDefaults fills in. Sizes come from the board; empty strings
// fall back to DefaultCompress, DefaultOutputDir and DefaultVersion.
type Defaults struct {
	// BootSize is the board's size of each boot partition.
	BootSize Size
	// SystemSize is the board's size of each system slot.
	SystemSize Size
	// DataMinSize is the board's size of the data partition in the image.
	DataMinSize Size
	// Compress is the default output compression; empty means DefaultCompress.
	Compress string
	// OutputDir is the default output directory; empty means DefaultOutputDir.
	OutputDir string
	// Version is the default release version; empty means DefaultVersion.
	Version string
}

// SetDefaults fills in every field the spec leaves unset. A relative default output
// directory is resolved against s.Dir when the spec came from a file. SetDefaults is
// idempotent; call Validate after it.
func (s *Spec) SetDefaults(d Defaults) {
	if s.Version == "" {
		s.Version = or(d.Version, DefaultVersion)
	}
	if s.Layout.BootSize == 0 {
		s.Layout.BootSize = d.BootSize
	}
	if s.Layout.SystemSize == 0 {
		s.Layout.SystemSize = d.SystemSize
	}
	if s.Layout.DataMinSize == 0 {
		s.Layout.DataMinSize = d.DataMinSize
	}
	if s.Output.Compress == "" {
		s.Output.Compress = or(d.Compress, DefaultCompress)
	}
	if s.Output.Dir == "" {
		s.Output.Dir = or(d.OutputDir, DefaultOutputDir)
		if s.Dir != "" && !filepath.IsAbs(s.Output.Dir) {
			s.Output.Dir = filepath.Join(s.Dir, s.Output.Dir)
		}
	}
	for i := range s.Users {
		if s.Users[i].Shell == "" {
			s.Users[i].Shell = DefaultShell
		}
	}
	s.Fleet.setDefaults()
	s.setK3sDefaults()
	s.OTA.setDefaults()
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
