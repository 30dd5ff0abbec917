package rootfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
)

var epoch = time.Unix(1700000000, 0).UTC()

func baseTree(t *testing.T) *tree.Tree {
	t.Helper()
	tr := tree.New()
	files := map[string]string{
		"etc/passwd":                         "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\napp:x:999:999::/nonexistent:/usr/sbin/nologin\n",
		"etc/shadow":                         "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\napp:*:19000:0:99999:7:::\n",
		"etc/group":                          "root:x:0:\nsudo:x:27:\nadm:x:4:syslog\napp:x:999:\n",
		"etc/gshadow":                        "root:*::\nsudo:*::\nadm:*::syslog\napp:!::\n",
		"etc/hosts":                          "127.0.0.1 localhost\n127.0.1.1 raspberrypi\n",
		"usr/lib/os-release":                 "ID=debian\nVERSION_CODENAME=bookworm\n",
		"var/lib/dpkg/status":                "Package: bash\n",
		"var/cache/apt/pkgcache.bin":         "x",
		"var/backups/passwd.bak":             "x",
		"etc/ssh/ssh_host_rsa_key":           "secret",
		"etc/ssh/sshd_config":                "Include /etc/ssh/sshd_config.d/*.conf\n",
		"usr/lib/systemd/system/ssh.service": "[Unit]\n",
	}
	for p, c := range files {
		if err := tr.WriteFile(p, []byte(c), 0o644, time.Unix(1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	must(t, tr.Put(&tree.Entry{Path: "var/lib/dpkg/status-old", Kind: tree.Hardlink, Linkname: "var/lib/dpkg/status"}))
	must(t, tr.Symlink("/run", "var/run", time.Unix(1, 0)))
	must(t, tr.Symlink("../../usr/share/doc/systemd/README.logs", "var/log/README", time.Unix(1, 0)))
	must(t, tr.Symlink("../lib/dpkg/status", "var/cache/status-link", time.Unix(1, 0)))
	must(t, tr.WriteFile("usr/bin/sh", []byte("sh"), 0o755, time.Unix(1, 0)))
	must(t, tr.WriteFile("usr/bin/mount", []byte("mount"), 0o755, time.Unix(1, 0)))
	must(t, tr.Symlink("/lib/systemd/systemd", "sbin/init", time.Unix(1, 0)))
	must(t, tr.WriteFile("usr/lib/systemd/systemd", []byte("systemd"), 0o755, time.Unix(1, 0)))
	must(t, tr.Symlink("usr/lib", "lib", time.Unix(1, 0)))
	must(t, tr.Put(&tree.Entry{Path: "var/mail", Kind: tree.Dir, Mode: 0o2775, GID: 8}))
	must(t, tr.Symlink("usr/bin", "bin", time.Unix(1, 0)))
	return tr
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, tr *tree.Tree, p string) string {
	t.Helper()
	b, err := tr.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPrepare(t *testing.T) {
	tr := baseTree(t)
	added, err := Prepare(tr, SystemInput{
		Release:  Release{Name: "gw", Board: "rpi4", Version: "3", LayoutVersion: 1, DataPartUUID: "cafe0001-07"},
		Hostname: "gw-1", Epoch: epoch, Agent: tree.Bytes("ELF"), AgentSize: 3, GrowUnit: "[Unit]\n",
	})
	must(t, err)
	// Nothing the slot ships stays under /var (the data partition hides it) but the mount point.
	_ = tr.Walk(func(e *tree.Entry) error {
		if strings.HasPrefix(e.Path, "var/") {
			t.Errorf("/%s left under the data partition's mount point", e.Path)
		}
		return nil
	})
	if e := tr.Get("var"); e == nil || e.Kind != tree.Dir {
		t.Fatal("/var mount point missing")
	}
	if got := read(t, tr, FactoryVar+"/lib/dpkg/status"); got != "Package: bash\n" {
		t.Errorf("factory dpkg status = %q", got)
	}
	if e := tr.Get(FactoryVar + "/lib/dpkg/status-old"); e == nil || e.Kind != tree.Hardlink || e.Linkname != FactoryVar+"/lib/dpkg/status" {
		t.Errorf("hard link not moved with its target: %+v", e)
	}
	if e := tr.Get(FactoryVar + "/mail"); e == nil || e.Mode != 0o2775 || e.GID != 8 {
		t.Errorf("/var/mail metadata lost: %+v", e)
	}
	tmp := read(t, tr, "usr/lib/tmpfiles.d/edgeimg-var.conf")
	for _, want := range []string{
		"C /var/lib/dpkg - - - - /usr/share/factory/var/lib/dpkg\n",
		"C /var/cache/apt - - - - /usr/share/factory/var/cache/apt\n",
		"C /var/backups - - - - /usr/share/factory/var/backups\n",
		"C /var/mail - - - - /usr/share/factory/var/mail\n",
	} {
		if !strings.Contains(tmp, want) {
			t.Errorf("tmpfiles lacks %q:\n%s", want, tmp)
		}
	}
	if strings.Contains(tmp, "/var/run") || strings.Contains(tmp, "C /var/lib ") {
		t.Errorf("tmpfiles copies what systemd makes itself:\n%s", tmp)
	}
	if e := tr.Get(FactoryVar + "/log/README"); e == nil || e.Linkname != "/usr/share/doc/systemd/README.logs" {
		t.Errorf("a relative link out of /var dangles in the factory copy: %+v", e)
	}
	if e := tr.Get(FactoryVar + "/cache/status-link"); e == nil || e.Linkname != "../lib/dpkg/status" {
		t.Errorf("a link within /var was changed: %+v", e)
	}
	if init := read(t, tr, EarlyInit); !strings.Contains(init, "data=PARTUUID=cafe0001-07\n") || !strings.HasSuffix(init, "exec /sbin/init \"$@\"\n") {
		t.Errorf("early init:\n%s", init)
	}
	if e := tr.Get(EarlyInit); e.Mode != 0o755 {
		t.Errorf("early init mode %o", e.Mode)
	}
	fstab := read(t, tr, "etc/fstab")
	if !strings.Contains(fstab, "PARTUUID=cafe0001-07 /var ext4 ") || !strings.Contains(fstab, "x-systemd.makefs") {
		t.Errorf("fstab:\n%s", fstab)
	}
	for _, l := range strings.Split(fstab, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == "/" {
			t.Errorf("fstab names the root filesystem (one slot image must boot from either slot): %s", l)
		}
	}
	for _, r := range redirected {
		if e := tr.Get(r); e == nil || e.Kind != tree.Symlink || e.Linkname != StateDir+"/"+r {
			t.Errorf("/%s is not redirected to the data partition: %+v", r, e)
		}
	}
	if tr.Get("etc/ssh/ssh_host_rsa_key") != nil {
		t.Error("the base's SSH host key is shipped to every device")
	}
	if e := tr.Get("usr/lib/clock-epoch"); e == nil || !e.ModTime.Equal(epoch) {
		t.Errorf("clock-epoch: %+v", e)
	}
	if e := tr.Get("etc/machine-id"); e == nil || e.Size != 0 {
		t.Errorf("machine-id must be empty in the slot: %+v", e)
	}
	if e := tr.Get("etc/systemd/system/userconfig.service"); e == nil || e.Linkname != "/dev/null" {
		t.Error("the interactive first-user prompt is not masked")
	}
	if e := tr.Get("etc/systemd/system/multi-user.target.wants/ssh.service"); e == nil {
		t.Error("ssh not enabled")
	}
	if e := tr.Get("usr/local/bin/edgeimg-agent"); e == nil || e.Mode != 0o755 {
		t.Errorf("agent: %+v", e)
	}
	if !strings.Contains(read(t, tr, "usr/lib/os-release"), "IMAGE_ID=gw\nIMAGE_VERSION=3\n") {
		t.Error("os-release lacks IMAGE_ID/IMAGE_VERSION")
	}
	if h := read(t, tr, "etc/hosts"); !strings.Contains(h, "127.0.1.1\tgw-1") || strings.Contains(h, "raspberrypi") {
		t.Errorf("hosts: %q", h)
	}
	r, err := WriteRelease(tr, Release{Name: "gw", DataPartUUID: "cafe0001-07"}, append(added, "/etc/fstab"), epoch)
	must(t, err)
	rel := read(t, tr, ReleasePath)
	if !strings.Contains(rel, `"dataPartUUID": "cafe0001-07"`) || !strings.Contains(rel, "/usr/local/bin/edgeimg-agent") || string(r.JSON()) != rel {
		t.Errorf("release.json: %s", rel)
	}
	if strings.Count(rel, `"/etc/fstab"`) != 1 || r.BuildEpoch != epoch.Unix() {
		t.Errorf("additions not deduplicated or epoch unset: %s", rel)
	}
	if len(added) < 10 {
		t.Errorf("additions: %v", added)
	}
}

// TestEarlyInitNeedsShell: a base without /bin/sh cannot run the early init; the build says so
// instead of making an image whose kernel panics.
func TestEarlyInitNeedsShell(t *testing.T) {
	tr := baseTree(t)
	tr.Remove("usr/bin/sh")
	_, err := Prepare(tr, SystemInput{Release: Release{DataPartUUID: "cafe0001-07"}, Epoch: epoch, Agent: tree.Bytes("x"), AgentSize: 1})
	if err == nil || !strings.Contains(err.Error(), "/bin/sh") {
		t.Fatalf("error %v", err)
	}
}

func TestAddUsers(t *testing.T) {
	tr := baseTree(t)
	uid := 0
	wrote, err := AddUsers(tr, []User{
		{Name: "ops", Groups: []string{"sudo", "adm"}, SSHAuthorizedKeys: []string{"ssh-ed25519 AAAAC3Nza ops@x"}},
		{Name: "svc", UID: 1500, Shell: "/usr/sbin/nologin", PasswordHash: "$y$j9T$abc"},
	}, epoch)
	must(t, err)
	_ = uid
	passwd := read(t, tr, "etc/passwd")
	if !strings.Contains(passwd, "ops:x:1000:1000:ops:/home/ops:/bin/bash\n") || !strings.Contains(passwd, "svc:x:1500:1500:svc:/home/svc:/usr/sbin/nologin\n") {
		t.Errorf("passwd:\n%s", passwd)
	}
	group := read(t, tr, "etc/group")
	if !strings.Contains(group, "sudo:x:27:ops\n") || !strings.Contains(group, "adm:x:4:syslog,ops\n") || !strings.Contains(group, "ops:x:1000:\n") {
		t.Errorf("group:\n%s", group)
	}
	shadow := read(t, tr, "etc/shadow")
	if !strings.Contains(shadow, "ops:!:19675:") || !strings.Contains(shadow, "svc:$y$j9T$abc:") {
		t.Errorf("shadow:\n%s", shadow)
	}
	if !strings.Contains(read(t, tr, "etc/gshadow"), "sudo:*::ops\n") {
		t.Error("gshadow membership missing")
	}
	k := tr.Get("home/ops/.ssh/authorized_keys")
	if k == nil || k.Mode != 0o600 || k.UID != 1000 || k.GID != 1000 {
		t.Fatalf("authorized_keys: %+v", k)
	}
	if d := tr.Get("home/ops/.ssh"); d.Mode != 0o700 || d.UID != 1000 {
		t.Errorf(".ssh: %+v", d)
	}
	if e := tr.Get("etc/sudoers.d/010_edgeimg-ops"); e == nil || e.Mode != 0o440 {
		t.Errorf("sudoers drop-in: %+v", e)
	}
	if tr.Get("etc/sudoers.d/010_edgeimg-svc") != nil {
		t.Error("svc is not in sudo")
	}
	if len(wrote) == 0 {
		t.Error("no paths reported")
	}
	for _, c := range []struct {
		u    User
		want string
	}{
		{User{Name: "app"}, `users[0].name: user "app" already exists`},
		{User{Name: "x", Groups: []string{"wheel"}}, `users[0].groups[0]: group "wheel" does not exist`},
		{User{Name: "y", UID: 999}, "users[0].uid: 999 is already used"},
	} {
		if _, err := AddUsers(baseTree(t), []User{c.u}, epoch); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.u, err, c.want)
		}
	}
}

func TestApplyOverlay(t *testing.T) {
	tr := baseTree(t)
	dir := t.TempDir()
	write := func(p, c string, mode os.FileMode) {
		full := filepath.Join(dir, p)
		must(t, os.MkdirAll(filepath.Dir(full), 0o777))
		must(t, os.WriteFile(full, []byte(c), mode))
		must(t, os.Chmod(full, mode))
	}
	write("etc/app/config.yaml", "a: 1\n", 0o664)
	write("etc/app/secret", "s", 0o600)
	write("bin/tool", "#!/bin/sh\n", 0o775)
	write("usr/local/sbin/root-only", "x", 0o700)
	must(t, os.Symlink("/etc/app/config.yaml", filepath.Join(dir, "etc/app.yaml")))
	write(AttrsFile, `
- path: /etc/app
  owner: app
  group: app
  recursive: true
- path: /etc/app/secret
  mode: "0640"
- path: /usr/local/sbin/*
  mode: "4750"
  group: "27"
`, 0o644)
	wrote, err := ApplyOverlay(tr, dir, epoch)
	must(t, err)
	check := func(p string, mode, uid, gid uint32) {
		t.Helper()
		e := tr.Get(p)
		if e == nil {
			t.Fatalf("/%s missing", p)
		}
		if e.Mode != mode || e.UID != uid || e.GID != gid || !e.ModTime.Equal(epoch) {
			t.Errorf("/%s: mode %o uid %d gid %d mtime %v; want %o %d %d", p, e.Mode, e.UID, e.GID, e.ModTime, mode, uid, gid)
		}
	}
	check("etc/app/config.yaml", 0o644, 999, 999)
	check("etc/app/secret", 0o640, 999, 999)
	check("usr/bin/tool", 0o755, 0, 0) // through the merged-/usr symlink
	check("usr/local/sbin/root-only", 0o4750, 0, 27)
	if e := tr.Get("etc"); e.ModTime.Equal(epoch) {
		t.Error("an overlay directory reset the metadata of the base's /etc")
	}
	if e := tr.Get("etc/app.yaml"); e == nil || e.Kind != tree.Symlink || e.Linkname != "/etc/app/config.yaml" {
		t.Errorf("symlink: %+v", e)
	}
	if tr.Get(AttrsFile) != nil {
		t.Error("the attributes file was copied into the image")
	}
	if len(wrote) != 10 {
		t.Errorf("wrote %v", wrote)
	}

	bad := t.TempDir()
	must(t, os.WriteFile(filepath.Join(bad, AttrsFile), []byte("- path: /x\n  mood: 1\n"), 0o644))
	if _, err := ApplyOverlay(baseTree(t), bad, epoch); err == nil || !strings.Contains(err.Error(), "mood") {
		t.Errorf("unknown field in attributes: %v", err)
	}
	must(t, os.WriteFile(filepath.Join(bad, AttrsFile), []byte("- path: /x\n  owner: nobody-here\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(bad, "x"), nil, 0o644))
	if _, err := ApplyOverlay(baseTree(t), bad, epoch); err == nil || !strings.Contains(err.Error(), "nobody-here") {
		t.Errorf("unknown owner: %v", err)
	}
	if _, err := ApplyOverlay(baseTree(t), filepath.Join(bad, "missing"), epoch); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing overlay: %v", err)
	}
}
