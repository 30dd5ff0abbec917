package spec

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode"
)

// FieldError is one problem Validate found: the path of the field (users[1].name) and what
// is wrong with its value.
type FieldError struct {
	Field string
	Msg   string
}

// Error formats the problem as FIELD: MESSAGE.
func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Patterns of the spec's names; the JSON Schema uses them too.
const (
	namePattern     = `^[a-z0-9][a-z0-9-]*$`
	versionPattern  = `^[0-9]{1,18}(\.[0-9]{1,18})*$`
	hostnamePattern = `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
	userPattern     = `^[a-z_][a-z0-9_-]{0,31}$`
	sha256Pattern   = `^[0-9a-f]{64}$`
	cryptPattern    = `^\$(y|gy|7|2[aby]|5|6)\$[./0-9A-Za-z$=,]+$`
	keyPattern      = `^(ssh-ed25519|ssh-rsa|ecdsa-sha2-[^ ]+|sk-[^ ]+) [A-Za-z0-9+/]+={0,2}( .*)?$`
	imagePattern    = `\.img(\.xz|\.zst|\.gz)?$`
)

var (
	nameRE     = regexp.MustCompile(namePattern)
	versionRE  = regexp.MustCompile(versionPattern)
	hostnameRE = regexp.MustCompile(hostnamePattern)
	userRE     = regexp.MustCompile(userPattern)
	sha256RE   = regexp.MustCompile(sha256Pattern)
	cryptRE    = regexp.MustCompile(cryptPattern)
)

// Limits Validate enforces.
const (
	MinBootSize    = 64 * MiB
	MinSystemSize  = 256 * MiB
	MinDataMinSize = 64 * MiB
	MaxPartSize    = 1 * TiB // for any one partition
	MinUID         = 1000    // Debian's first regular user id
	MaxUID         = 59999   // Debian's last regular user id
)

// ReservedUserNames are the system accounts of Debian and Raspberry Pi OS, which a spec
// may not define as login users.
var ReservedUserNames = []string{
	"_apt", "avahi", "backup", "bin", "daemon", "dnsmasq", "games", "gnats", "irc", "list",
	"lp", "mail", "man", "messagebus", "news", "nobody", "ntp", "polkitd", "proxy", "root",
	"rpc", "sshd", "statd", "sync", "sys", "systemd-coredump", "systemd-network",
	"systemd-resolve", "systemd-timesync", "tss", "uucp", "www-data",
}

// Validate checks a spec after SetDefaults and returns every problem it finds, joined
// (errors.Join), each a *FieldError naming the field and its value. Fields SetDefaults fills
// in are reported as "must be set" when it has not run.
func (s *Spec) Validate() error {
	var v validator

	switch {
	case s.Name == "":
		v.add("name", "must be set")
	case len(s.Name) > 63 || !nameRE.MatchString(s.Name):
		v.addf("name", "%q is not a valid name: use lower-case letters, digits and '-', starting with a letter or digit, at most 63 characters", s.Name)
	}

	switch {
	case s.Board == "":
		v.add("board", "must be set (in the spec or with --board)")
	case !slices.Contains(KnownBoards, s.Board):
		v.addf("board", "%q is not a known board (known: %s)", s.Board, strings.Join(KnownBoards, ", "))
	}

	switch {
	case s.Version == "":
		v.add("version", "must be set")
	case len(s.Version) > 64 || !versionRE.MatchString(s.Version):
		v.addf("version", "%q is not a valid version: use dot-separated decimal numbers such as 1, 2.3 or 2024.11.25 (at most 18 digits each, 64 characters in all)", s.Version)
	}

	v.base(s.Base)

	for i, o := range s.Overlays {
		f := fmt.Sprintf("overlays[%d]", i)
		switch {
		case o == "":
			v.add(f, "must not be empty")
		case hasControl(o):
			v.addf(f, "%q contains a control character", o)
		}
	}

	v.users(s.Users)

	if s.Hostname != "" && !hostnameRE.MatchString(s.Hostname) {
		v.addf("hostname", "%q is not a valid host name: use an RFC 1123 label in lower case (letters, digits and '-', not at either end, at most 63 characters)", s.Hostname)
	}

	v.size("layout.bootSize", s.Layout.BootSize, MinBootSize)
	v.size("layout.systemSize", s.Layout.SystemSize, MinSystemSize)
	v.size("layout.dataMinSize", s.Layout.DataMinSize, MinDataMinSize)

	switch {
	case s.Output.Dir == "":
		v.add("output.dir", "must be set")
	case hasControl(s.Output.Dir):
		v.addf("output.dir", "%q contains a control character", s.Output.Dir)
	}
	switch {
	case s.Output.Compress == "":
		v.add("output.compress", "must be set")
	case !slices.Contains(Compressions, s.Output.Compress):
		v.addf("output.compress", "%q is not one of %s", s.Output.Compress, strings.Join(Compressions, ", "))
	}

	v.fleet(s.Fleet)
	v.k3s(s)
	v.ota(s.OTA, s.Version)

	return errors.Join(v.errs...)
}

type validator struct{ errs []error }

func (v *validator) add(field, msg string) {
	v.errs = append(v.errs, &FieldError{Field: field, Msg: msg})
}

func (v *validator) addf(field, format string, args ...any) {
	v.add(field, fmt.Sprintf(format, args...))
}

func (v *validator) base(b Base) {
	if b.SHA256 != "" && !sha256RE.MatchString(b.SHA256) {
		if sha256RE.MatchString(strings.ToLower(b.SHA256)) {
			v.addf("base.sha256", "%q must be written in lower case", b.SHA256)
		} else {
			v.addf("base.sha256", "%q is not a SHA-256: expected 64 hex digits", b.SHA256)
		}
	}
	if b.Image == "" {
		if b.SHA256 != "" {
			v.add("base.sha256", "is set but base.image is not")
		}
		return
	}
	if hasControl(b.Image) {
		v.addf("base.image", "%q contains a control character", b.Image)
		return
	}
	name := b.Image
	if isURL(b.Image) {
		u, err := url.Parse(b.Image)
		switch {
		case err != nil:
			v.addf("base.image", "%q is not a valid URL", b.Image)
			return
		case u.Scheme != "https" && u.Scheme != "http":
			v.addf("base.image", "%q has the unsupported scheme %q: use https, http or a local path", b.Image, u.Scheme)
			return
		case u.Host == "":
			v.addf("base.image", "%q has no host", b.Image)
			return
		}
		if b.SHA256 == "" {
			v.addf("base.sha256", "must be set when base.image is a URL (%q)", b.Image)
		}
		name = u.Path
	}
	if !imageRE.MatchString(path.Base(name)) || strings.HasSuffix(name, "/") {
		v.addf("base.image", "%q is not a disk image: the name must end in .img, .img.xz, .img.zst or .img.gz", b.Image)
	}
}

var imageRE = regexp.MustCompile(`.` + imagePattern)

func (v *validator) users(users []User) {
	names := map[string]int{}
	uids := map[int]int{}
	for i, u := range users {
		p := fmt.Sprintf("users[%d]", i)
		switch {
		case u.Name == "":
			v.add(p+".name", "must be set")
		case !userRE.MatchString(u.Name):
			v.addf(p+".name", "%q is not a valid user name: use a lower-case letter or '_', then lower-case letters, digits, '_' or '-', at most 32 characters", u.Name)
		case slices.Contains(ReservedUserNames, u.Name):
			v.addf(p+".name", "%q is reserved for the system", u.Name)
		default:
			if j, dup := names[u.Name]; dup {
				v.addf(p+".name", "%q is already the name of users[%d]", u.Name, j)
			} else {
				names[u.Name] = i
			}
		}
		if u.UID != nil {
			switch uid := *u.UID; {
			case uid < MinUID || uid > MaxUID:
				v.addf(p+".uid", "%d is out of range: user ids are %d to %d", uid, MinUID, MaxUID)
			default:
				if j, dup := uids[uid]; dup {
					v.addf(p+".uid", "%d is already the uid of users[%d]", uid, j)
				} else {
					uids[uid] = i
				}
			}
		}
		groups := map[string]bool{}
		for j, g := range u.Groups {
			f := fmt.Sprintf("%s.groups[%d]", p, j)
			switch {
			case !userRE.MatchString(g):
				v.addf(f, "%q is not a valid group name", g)
			case groups[g]:
				v.addf(f, "%q is listed twice", g)
			}
			groups[g] = true
		}
		switch {
		case u.Shell == "":
			v.add(p+".shell", "must be set")
		case !strings.HasPrefix(u.Shell, "/") || path.Clean(u.Shell) != u.Shell ||
			strings.ContainsFunc(u.Shell, func(r rune) bool { return r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) }):
			v.addf(p+".shell", "%q is not a clean absolute path", u.Shell)
		}
		for j, k := range u.SSHAuthorizedKeys {
			if err := checkAuthorizedKey(k); err != nil {
				v.addf(fmt.Sprintf("%s.sshAuthorizedKeys[%d]", p, j), "%q %v", short(k), err)
			}
		}
		if u.PasswordHash != "" && !cryptRE.MatchString(u.PasswordHash) {
			// The value is not repeated: it may be a password written here by mistake.
			v.add(p+".passwordHash", "is not a crypt(3) hash ($y$…, $6$…, $5$… or $2b$…): make one with mkpasswd -m yescrypt")
		}
	}
}

func (v *validator) size(field string, z, minimum Size) {
	switch {
	case z == 0:
		v.add(field, "must be set")
	case z < minimum:
		v.addf(field, "%s is too small: at least %s", z, minimum)
	case z > MaxPartSize:
		v.addf(field, "%s is too large: at most %s", z, MaxPartSize)
	case z%MiB != 0:
		v.addf(field, "%s is not a whole number of MiB", z)
	}
}

// checkAuthorizedKey checks one authorized_keys line: TYPE BASE64 [COMMENT], the base64
// data holding a key of that type.
func checkAuthorizedKey(line string) error {
	if strings.ContainsFunc(line, func(r rune) bool { return r != '\t' && unicode.IsControl(r) }) {
		return errors.New("is not one line of text")
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return errors.New("is not an authorized_keys line: expected TYPE BASE64 [COMMENT]")
	}
	typ := f[0]
	if typ != "ssh-ed25519" && typ != "ssh-rsa" && !strings.HasPrefix(typ, "ecdsa-sha2-") && !strings.HasPrefix(typ, "sk-") {
		return fmt.Errorf("has the key type %q: expected ssh-ed25519, ssh-rsa, ecdsa-sha2-* or sk-* (options before the key are not supported)", short(typ))
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return errors.New("has key data that is not base64")
	}
	// The key data starts with the key type as an SSH string (RFC 4253 section 6.6).
	if len(blob) < 4 {
		return fmt.Errorf("does not hold a %s key", typ)
	}
	n := binary.BigEndian.Uint32(blob)
	if uint64(n) > uint64(len(blob)-4) || string(blob[4:4+n]) != typ {
		return fmt.Errorf("does not hold a %s key", typ)
	}
	return nil
}

// short shortens a long value for an error message.
func short(s string) string {
	if len(s) > 48 {
		return s[:40] + "…" + s[len(s)-6:]
	}
	return s
}

func hasControl(s string) bool { return strings.ContainsFunc(s, unicode.IsControl) }
