package spec

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"
)

// validSpec returns a spec that passes Validate; tests break one thing at a time.
func validSpec() *Spec {
	uid := 1000
	s := &Spec{
		Name:     "store-gateway",
		Board:    "rpi4",
		Version:  "2024.11.25",
		Base:     Base{Image: "https://example.com/raspios.img.xz", SHA256: sha},
		Overlays: []string{"/srv/overlays/common"},
		Users: []User{{
			Name: "ops", UID: &uid, Groups: []string{"sudo"},
			SSHAuthorizedKeys: []string{keyEd25519, keyECDSA, goKey(ed25519.PublicKey(make([]byte, 32)))},
			PasswordHash:      hashSHA512,
		}},
		Hostname: "edge-1",
	}
	s.SetDefaults(testDefaults)
	return s
}

// goKey formats an ed25519 public key as an authorized_keys line.
func goKey(pub ed25519.PublicKey) string {
	var blob []byte
	for _, f := range [][]byte{[]byte("ssh-ed25519"), pub} {
		blob = binary.BigEndian.AppendUint32(blob, uint32(len(f)))
		blob = append(blob, f...)
	}
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob)
}

func TestValidateGood(t *testing.T) {
	if err := validSpec().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, mod := range []func(*Spec){
		func(s *Spec) { s.Base = Base{} },                                                     // board default
		func(s *Spec) { s.Base = Base{Image: "/images/base.img"} },                            // path without sha
		func(s *Spec) { s.Base = Base{Image: "base.img.zst", SHA256: sha} },                   // path with sha
		func(s *Spec) { s.Base = Base{Image: "http://127.0.0.1:8080/a.img.gz", SHA256: sha} }, // http with sha
		func(s *Spec) { s.Hostname = "" },
		func(s *Spec) { s.Version = "0" },
		func(s *Spec) { s.Users = nil },
		func(s *Spec) { s.Users[0].UID = nil },
		func(s *Spec) { s.Users[0].PasswordHash = "$5$pepper$1U50.bmJl7S9muO0qei2MolmXSSh.dPAP15Dw/66LF6" }, // openssl passwd -5
		func(s *Spec) { s.Users[0].SSHAuthorizedKeys = []string{"sk-ssh-ed25519@openssh.com " + skBlob()} },
		func(s *Spec) { s.Output.Compress = "none" },
		func(s *Spec) { s.Name = "0" },
		func(s *Spec) { s.Name = strings.Repeat("a", 63) },
	} {
		s := validSpec()
		mod(s)
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
}

func skBlob() string {
	var blob []byte
	for _, f := range []string{"sk-ssh-ed25519@openssh.com", strings.Repeat("k", 32), "ssh:"} {
		blob = binary.BigEndian.AppendUint32(blob, uint32(len(f)))
		blob = append(blob, f...)
	}
	return base64.StdEncoding.EncodeToString(blob)
}

func TestValidateErrors(t *testing.T) {
	uid := func(n int) *int { return &n }
	for _, tc := range []struct {
		name string
		mod  func(*Spec)
		want []string // field: message, one per error
	}{
		{"name missing", func(s *Spec) { s.Name = "" }, []string{"name: must be set"}},
		{"name invalid", func(s *Spec) { s.Name = "Store_GW" }, []string{`name: "Store_GW" is not a valid name`}},
		{"name too long", func(s *Spec) { s.Name = strings.Repeat("a", 64) }, []string{`name: "aaaa`}},
		{"name leading hyphen", func(s *Spec) { s.Name = "-a" }, []string{`name: "-a" is not a valid name`}},
		{"board missing", func(s *Spec) { s.Board = "" }, []string{"board: must be set (in the spec or with --board)"}},
		{"board unknown", func(s *Spec) { s.Board = "rpi5" }, []string{`board: "rpi5" is not a known board (known: rpi4)`}},
		{"version", func(s *Spec) { s.Version = "v1.2" }, []string{`version: "v1.2" is not a valid version`}},
		{"version empty part", func(s *Spec) { s.Version = "1..2" }, []string{`version: "1..2" is not a valid version`}},
		{"sha too short", func(s *Spec) { s.Base.SHA256 = "abc" }, []string{`base.sha256: "abc" is not a SHA-256: expected 64 hex digits`}},
		{"sha upper case", func(s *Spec) { s.Base.SHA256 = strings.ToUpper(sha) }, []string{"must be written in lower case"}},
		{"url without sha", func(s *Spec) { s.Base.SHA256 = "" }, []string{`base.sha256: must be set when base.image is a URL ("https://example.com/raspios.img.xz")`}},
		{"http without sha", func(s *Spec) { s.Base = Base{Image: "http://example.com/a.img"} }, []string{"base.sha256: must be set when base.image is a URL"}},
		{"ftp url", func(s *Spec) { s.Base.Image = "ftp://example.com/a.img" }, []string{`base.image: "ftp://example.com/a.img" has the unsupported scheme "ftp"`}},
		{"url without host", func(s *Spec) { s.Base.Image = "https:///a.img" }, []string{`base.image: "https:///a.img" has no host`}},
		{"not an image", func(s *Spec) { s.Base.Image = "https://example.com/raspios.iso" }, []string{`base.image: "https://example.com/raspios.iso" is not a disk image: the name must end in .img, .img.xz, .img.zst or .img.gz`}},
		{"image with query", func(s *Spec) { s.Base.Image = "https://example.com/raspios.img.xz?x=1" }, nil},
		{"image path bz2", func(s *Spec) { s.Base = Base{Image: "/x/raspios.img.bz2"} }, []string{`base.image: "/x/raspios.img.bz2" is not a disk image`}},
		{"bare .img", func(s *Spec) { s.Base = Base{Image: "/x/.img"} }, []string{`base.image: "/x/.img" is not a disk image`}},
		{"sha without image", func(s *Spec) { s.Base.Image = "" }, []string{"base.sha256: is set but base.image is not"}},
		{"empty overlay", func(s *Spec) { s.Overlays = append(s.Overlays, "") }, []string{"overlays[1]: must not be empty"}},
		{"control in overlay", func(s *Spec) { s.Overlays[0] = "a\nb" }, []string{`overlays[0]: "a\nb" contains a control character`}},
		{"bad user name", func(s *Spec) { s.Users = append(s.Users, User{Name: "Root!", Shell: "/bin/sh"}) }, []string{`users[1].name: "Root!" is not a valid user name`}},
		{"user name missing", func(s *Spec) { s.Users[0].Name = "" }, []string{"users[0].name: must be set"}},
		{"reserved user", func(s *Spec) { s.Users[0].Name = "root" }, []string{`users[0].name: "root" is reserved for the system`}},
		{"reserved daemon", func(s *Spec) { s.Users[0].Name = "daemon" }, []string{`users[0].name: "daemon" is reserved for the system`}},
		{"duplicate user", func(s *Spec) { s.Users = append(s.Users, User{Name: "ops", Shell: "/bin/sh"}) }, []string{`users[1].name: "ops" is already the name of users[0]`}},
		{"uid root", func(s *Spec) { s.Users[0].UID = uid(0) }, []string{"users[0].uid: 0 is out of range: user ids are 1000 to 59999"}},
		{"uid high", func(s *Spec) { s.Users[0].UID = uid(65534) }, []string{"users[0].uid: 65534 is out of range"}},
		{"duplicate uid", func(s *Spec) { s.Users = append(s.Users, User{Name: "ci", UID: uid(1000), Shell: "/bin/sh"}) }, []string{"users[1].uid: 1000 is already the uid of users[0]"}},
		{"bad group", func(s *Spec) { s.Users[0].Groups = []string{"sudo", "Wheel", "sudo"} }, []string{`users[0].groups[1]: "Wheel" is not a valid group name`, `users[0].groups[2]: "sudo" is listed twice`}},
		{"shell relative", func(s *Spec) { s.Users[0].Shell = "bash" }, []string{`users[0].shell: "bash" is not a clean absolute path`}},
		{"shell colon", func(s *Spec) { s.Users[0].Shell = "/bin/sh:x" }, []string{`users[0].shell: "/bin/sh:x" is not a clean absolute path`}},
		{"shell missing", func(s *Spec) { s.Users[0].Shell = "" }, []string{"users[0].shell: must be set"}},
		{"key type", func(s *Spec) { s.Users[0].SSHAuthorizedKeys = []string{"ssh-dss AAAAB3NzaC1kc3M= old"} }, []string{`users[0].sshAuthorizedKeys[0]: "ssh-dss AAAAB3NzaC1kc3M= old" has the key type "ssh-dss"`}},
		{"key options", func(s *Spec) { s.Users[0].SSHAuthorizedKeys = []string{`from="10.0.0.1" ` + keyEd25519} }, []string{"options before the key are not supported"}},
		{"key no data", func(s *Spec) { s.Users[0].SSHAuthorizedKeys = []string{"ssh-ed25519"} }, []string{"is not an authorized_keys line: expected TYPE BASE64 [COMMENT]"}},
		{"key not base64", func(s *Spec) { s.Users[0].SSHAuthorizedKeys = []string{"ssh-ed25519 AAAA!!!!"} }, []string{"has key data that is not base64"}},
		{"key type mismatch", func(s *Spec) {
			s.Users[0].SSHAuthorizedKeys = []string{"ssh-rsa" + strings.TrimPrefix(keyEd25519, "ssh-ed25519")}
		}, []string{"does not hold a ssh-rsa key"}},
		{"key truncated", func(s *Spec) { s.Users[0].SSHAuthorizedKeys = []string{"ssh-ed25519 AAAA"} }, []string{"does not hold a ssh-ed25519 key"}},
		{"key two lines", func(s *Spec) { s.Users[0].SSHAuthorizedKeys = []string{keyEd25519 + "\n" + keyECDSA} }, []string{"is not one line of text"}},
		{"password not hashed", func(s *Spec) { s.Users[0].PasswordHash = "hunter2" }, []string{"users[0].passwordHash: is not a crypt(3) hash"}},
		{"password md5", func(s *Spec) { s.Users[0].PasswordHash = "$1$salt$qJH7.N4xYta3aEG/dfqo/0" }, []string{"users[0].passwordHash: is not a crypt(3) hash"}},
		{"hostname", func(s *Spec) { s.Hostname = "Edge_1" }, []string{`hostname: "Edge_1" is not a valid host name`}},
		{"hostname hyphen end", func(s *Spec) { s.Hostname = "edge-" }, []string{`hostname: "edge-" is not a valid host name`}},
		{"hostname too long", func(s *Spec) { s.Hostname = strings.Repeat("h", 64) }, []string{"hostname: "}},
		{"compress", func(s *Spec) { s.Output.Compress = "gzip" }, []string{`output.compress: "gzip" is not one of none, zstd, xz`}},
		{"boot small", func(s *Spec) { s.Layout.BootSize = 32 * MiB }, []string{"layout.bootSize: 32MiB is too small: at least 64MiB"}},
		{"system small", func(s *Spec) { s.Layout.SystemSize = 255 * MiB }, []string{"layout.systemSize: 255MiB is too small: at least 256MiB"}},
		{"data small", func(s *Spec) { s.Layout.DataMinSize = 1 }, []string{"layout.dataMinSize: 1 is too small: at least 64MiB"}},
		{"size huge", func(s *Spec) { s.Layout.SystemSize = 2 * TiB }, []string{"layout.systemSize: 2TiB is too large: at most 1TiB"}},
		{"size not MiB", func(s *Spec) { s.Layout.BootSize = 64*MiB + 512 }, []string{"layout.bootSize: 67109376 is not a whole number of MiB"}},
		{"size negative", func(s *Spec) { s.Layout.BootSize = -MiB }, []string{"layout.bootSize: -1048576 is too small"}},
		{"output dir control", func(s *Spec) { s.Output.Dir = "out\x00" }, []string{`output.dir: "out\x00" contains a control character`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := validSpec()
			tc.mod(s)
			err := s.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("%+v validated", s)
			}
			fe := fieldErrors(t, err)
			if len(fe) != len(tc.want) {
				t.Fatalf("got %d errors, want %d: %v", len(fe), len(tc.want), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n\t%v\ndoes not contain\n\t%s", err, w)
				}
			}
		})
	}
}

func TestValidateCollectsAll(t *testing.T) {
	s := &Spec{
		Name:     "Bad Name",
		Board:    "pc",
		Base:     Base{Image: "https://example.com/x.img"},
		Overlays: []string{""},
		Users:    []User{{Name: "root"}, {Name: "Root!"}},
		Hostname: "-",
	}
	// Without SetDefaults, what it would have filled in is reported missing.
	err := s.Validate()
	fields := []string{"name", "board", "version", "base.sha256", "overlays[0]", "users[0].name", "users[0].shell",
		"users[1].name", "users[1].shell", "hostname", "layout.bootSize", "layout.systemSize", "layout.dataMinSize",
		"output.dir", "output.compress"}
	fe := fieldErrors(t, err)
	if len(fe) != len(fields) {
		t.Fatalf("got %d errors, want %d:\n%v", len(fe), len(fields), err)
	}
	for i, f := range fields {
		if fe[i].Field != f {
			t.Errorf("error %d is about %q, want %q (%v)", i, fe[i].Field, f, fe[i])
		}
	}
	if !strings.Contains(err.Error(), `users[1].name: "Root!" is not a valid user name`) {
		t.Errorf("error does not name users[1]: %v", err)
	}
}

func TestValidateDoesNotEchoPassword(t *testing.T) {
	s := validSpec()
	s.Users[0].PasswordHash = "correct horse battery staple"
	err := s.Validate()
	if err == nil || strings.Contains(err.Error(), "horse") {
		t.Fatalf("err = %v", err)
	}
}
