package rootfs

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// StateDir is where the device keeps edgeimg's own state, on the data partition.
const StateDir = "/var/lib/edgeimg"

// FactoryVar is where the base's /var goes in the slot: the data partition is mounted over
// /var, so nothing the slot ships may stay there. systemd-tmpfiles copies it onto a fresh
// data partition (`C` lines; see tmpfiles.d(5) and /usr/share/factory).
const FactoryVar = "usr/share/factory/var"

// Release describes the image; it is written to /usr/lib/edgeimg/release.json.
type Release struct {
	Name          string   `json:"name"`
	Board         string   `json:"board"`
	Version       string   `json:"version"`
	LayoutVersion int      `json:"layoutVersion"`
	BuildEpoch    int64    `json:"buildEpoch"`
	Builder       string   `json:"builder"`
	DataPartUUID  string   `json:"dataPartUUID"`
	Additions     []string `json:"additions,omitempty"`
}

// ReleasePath is the path of the release description in the system slot.
const ReleasePath = "usr/lib/edgeimg/release.json"

// BootReleasePath is where a copy of it goes in the slot's boot partition, readable without
// an ext4 reader (edgeimg inspect, and the device when it looks at the other slot).
const BootReleasePath = "edgeimg/release.json"

// SystemInput is what Prepare needs.
type SystemInput struct {
	Release  Release
	Hostname string // "" keeps the base's
	Epoch    time.Time
	// Agent is the on-device agent binary (linux, the board's arch); it is installed at
	// /usr/local/bin/edgeimg-agent.
	Agent tree.Content
	// AgentSize is Agent's size in bytes.
	AgentSize int64
	// GrowUnit is the text of edgeimg-grow-data.service, which grows the data partition to the
	// card before it is made and mounted.
	GrowUnit string
	// GrowRequiredBy are the units that require edgeimg-grow-data.service (its [Install]
	// RequiredBy=, enabled here as systemctl enable would).
	GrowRequiredBy []string
}

// EarlyInit is the image path of the early init: the kernel runs it as PID 1 (init= on the
// kernel command line, see InitArg) and it hands over to systemd at once.
const EarlyInit = "usr/lib/edgeimg/init"

// InitArg is the kernel argument that runs EarlyInit.
const InitArg = "init=/" + EarlyInit

// earlyInit installs EarlyInit. systemd reads /etc/machine-id before any unit runs, long
// before the data partition is mounted; without this, every boot after the first starts
// with a random transient machine-id (the journal and every "first boot" check see a new
// machine). The script reads the kept id from the data partition, mounted read-only for a
// moment, and binds it over the slot's empty /etc/machine-id. On the first boot (no
// filesystem yet) or on any failure it does nothing and systemd proceeds as usual: it must
// never keep the device from booting.
func (p *prep) earlyInit(dataUUID string) {
	if p.err != nil {
		return
	}
	for _, need := range []string{"bin/sh", "sbin/init", "bin/mount"} {
		if !p.exists(need) {
			p.err = fmt.Errorf("rootfs: the base has no /%s, which the early init needs", need)
			return
		}
	}
	p.file(EarlyInit, 0o755, strings.ReplaceAll(earlyInitScript, "@DATA@", "PARTUUID="+dataUUID))
}

// exists reports whether path names something in the tree, following symlinks, its parents'
// included (merged /usr: /sbin/init → /lib/systemd/systemd, /lib → usr/lib).
func (p *prep) exists(path string) bool {
	for i := 0; i < 40; i++ {
		q, err := resolveParents(p.t, path)
		if err != nil {
			return false
		}
		e := p.t.Get(q)
		if e == nil {
			return false
		}
		if e.Kind != tree.Symlink {
			return true
		}
		if strings.HasPrefix(e.Linkname, "/") {
			path = tree.Clean(e.Linkname)
		} else {
			path = tree.Clean(pathDir(q) + "/" + e.Linkname)
		}
	}
	return false
}

func pathDir(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

const earlyInitScript = `#!/bin/sh
# edgeimg early init (kernel command line init=/usr/lib/edgeimg/init): gives systemd this
# device's machine-id, kept on the data partition, before systemd reads /etc/machine-id.
# It changes nothing else and always ends in systemd, whatever fails.
data=@DATA@
[ -r /proc/self/mountinfo ] || mount -t proc proc /proc 2>/dev/null
grep -q ' /run ' /proc/self/mountinfo 2>/dev/null || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run 2>/dev/null
if mkdir -p /run/edgeimg/data 2>/dev/null && mount -t ext4 -o ro,noload,nosuid,nodev,noexec "$data" /run/edgeimg/data 2>/dev/null; then
	id=$(head -c 64 /run/edgeimg/data/lib/edgeimg/machine-id 2>/dev/null)
	umount /run/edgeimg/data 2>/dev/null
	case "$id" in
	*[!0-9a-f]*|"") ;;
	*) if [ ${#id} -eq 32 ] && printf '%s\n' "$id" >/run/machine-id; then
		mount --bind /run/machine-id /etc/machine-id 2>/dev/null
	fi ;;
	esac
fi
rmdir /run/edgeimg/data /run/edgeimg 2>/dev/null
exec /sbin/init "$@"
`

// masked are units of Raspberry Pi OS and Debian that would write to the read-only root, ask
// for input on a headless device, or fight K3s (swap); they are masked.
var masked = []string{
	"userconfig.service",               // Raspberry Pi OS: interactive first user prompt
	"regenerate_ssh_host_keys.service", // writes /etc/ssh; edgeimg-ssh-keys does it on /var
	"sshswitch.service",                // enables ssh from a boot partition flag file
	"rpi-resize.service",               // resizes the root partition: the layout is ours
	"rpi-resize-swap-file.service",
	"dphys-swapfile.service", // swap: K3s wants none
	"apt-daily.timer",
	"apt-daily-upgrade.timer",
	"man-db.timer",
	"systemd-machine-id-commit.service", // edgeimg-machine-id keeps it on /var instead
}

// redirected are paths under /etc that K3s, the agent or the network stack write at run time;
// each becomes a symlink to the same path under StateDir/etc on the data partition.
var redirected = []string{
	"etc/rancher/node",
	"etc/rancher/k3s/config.yaml.d",
	"etc/NetworkManager/system-connections",
	"etc/edgeimg/device",
}

// Prepare turns the base root filesystem into an immutable slot: the base's /var moves to the
// factory directory, fstab mounts the data partition at /var (made and grown on first boot),
// writable /etc paths become symlinks into the data partition, machine-id and SSH host keys
// live there too, the watchdog is on, the clock never starts before the build, and the agent
// and first-boot units are installed. It returns the image paths it added or changed.
func Prepare(t *tree.Tree, in SystemInput) ([]string, error) {
	var p prep
	p.t, p.epoch = t, in.Epoch
	if in.Release.DataPartUUID == "" {
		return nil, fmt.Errorf("rootfs: no data partition PARTUUID")
	}
	if in.Agent == nil {
		return nil, fmt.Errorf("rootfs: no agent binary")
	}
	p.moveVar()
	p.file("etc/fstab", 0o644, fstab(in.Release.DataPartUUID))
	p.file("etc/machine-id", 0o444, "")
	for _, e := range listUnder(t, "etc/ssh") {
		if strings.HasPrefix(pathBase(e.Path), "ssh_host_") {
			t.Remove(e.Path)
		}
	}
	p.file("etc/ssh/sshd_config.d/10-edgeimg.conf", 0o644, sshdConfig)
	p.file("etc/systemd/system/edgeimg-ssh-keys.service", 0o644, sshKeysUnit)
	p.wants("multi-user.target", "edgeimg-ssh-keys.service", "/etc/systemd/system/edgeimg-ssh-keys.service")
	for _, u := range []string{"lib/systemd/system/ssh.service", "usr/lib/systemd/system/ssh.service"} {
		if t.Get(u) != nil {
			p.wants("multi-user.target", "ssh.service", "/"+u)
			break
		}
	}
	p.file("etc/systemd/system/edgeimg-machine-id.service", 0o644, machineIDUnit)
	p.earlyInit(in.Release.DataPartUUID)
	p.wants("sysinit.target", "edgeimg-machine-id.service", "/etc/systemd/system/edgeimg-machine-id.service")
	for _, m := range masked {
		p.symlink("/dev/null", "etc/systemd/system/"+m)
	}
	var tmpfiles strings.Builder
	tmpfiles.WriteString("# edgeimg: state the read-only slot redirects to the data partition\n")
	fmt.Fprintf(&tmpfiles, "d %s 0755 root root -\nd %s/etc 0755 root root -\nd %s/ssh 0755 root root -\n", StateDir, StateDir, StateDir)
	for _, r := range redirected {
		target := StateDir + "/" + r
		p.redirect(r, target)
		fmt.Fprintf(&tmpfiles, "d %s 0700 root root -\n", target)
	}
	p.file("usr/lib/tmpfiles.d/edgeimg-state.conf", 0o644, tmpfiles.String())
	// NetworkManager writes resolv.conf; on a read-only /etc it must point into /run.
	p.symlink("../run/NetworkManager/resolv.conf", "etc/resolv.conf")
	p.file("usr/lib/clock-epoch", 0o644, "")
	p.file("etc/systemd/system.conf.d/10-edgeimg-watchdog.conf", 0o644, watchdogConf)
	if in.Hostname != "" {
		p.file("etc/hostname", 0o644, in.Hostname+"\n")
		p.hosts(in.Hostname)
	}
	if err := t.Put(&tree.Entry{Path: "usr/local/bin/edgeimg-agent", Kind: tree.Regular, Mode: 0o755,
		ModTime: in.Epoch, Size: in.AgentSize, Content: in.Agent}); err != nil {
		return nil, err
	}
	p.added = append(p.added, "/usr/local/bin/edgeimg-agent")
	p.file("etc/systemd/system/edgeimg-grow-data.service", 0o644, in.GrowUnit)
	for _, u := range in.GrowRequiredBy {
		p.symlink("/etc/systemd/system/edgeimg-grow-data.service", "etc/systemd/system/"+u+".requires/edgeimg-grow-data.service")
	}
	p.osRelease(in.Release)
	if p.err != nil {
		return nil, p.err
	}
	return p.added, nil
}

// WriteRelease writes the release description to ReleasePath, listing additions (the image
// paths the builder added or changed, deduplicated and sorted) and the epoch, and returns it.
func WriteRelease(t *tree.Tree, r Release, additions []string, epoch time.Time) (*Release, error) {
	r.BuildEpoch = epoch.Unix()
	seen := map[string]bool{"/" + ReleasePath: true}
	r.Additions = []string{"/" + ReleasePath}
	for _, a := range additions {
		if !seen[a] {
			seen[a] = true
			r.Additions = append(r.Additions, a)
		}
	}
	sort.Strings(r.Additions)
	if err := t.WriteFile(ReleasePath, r.JSON(), 0o644, epoch); err != nil {
		return nil, err
	}
	return &r, nil
}

// JSON returns the release description as written to ReleasePath.
func (r *Release) JSON() []byte {
	b, _ := json.MarshalIndent(r, "", "  ")
	return append(b, '\n')
}

type prep struct {
	t     *tree.Tree
	epoch time.Time
	added []string
	err   error
}

func (p *prep) file(path string, mode uint32, content string) {
	if p.err != nil {
		return
	}
	p.err = p.t.WriteFile(path, []byte(content), mode, p.epoch)
	p.added = append(p.added, "/"+path)
}

func (p *prep) symlink(target, path string) {
	if p.err != nil {
		return
	}
	p.err = p.t.Symlink(target, path, p.epoch)
	p.added = append(p.added, "/"+path)
}

func (p *prep) wants(target, unit, unitPath string) {
	p.symlink(unitPath, "etc/systemd/system/"+target+".wants/"+unit)
}

// redirect replaces path with a symlink to target, keeping nothing the base had there: the
// data partition starts empty and the device fills it.
func (p *prep) redirect(path, target string) {
	p.t.Remove(path)
	p.symlink(target, path)
}

// moveVar moves the base's /var into FactoryVar and writes the tmpfiles.d rules that copy it
// onto an empty data partition. /var/run and /var/lock are symlinks into /run that systemd
// recreates itself; /var/tmp likewise.
func (p *prep) moveVar() {
	if p.err != nil {
		return
	}
	t := p.t
	v := t.Get("var")
	if v == nil || v.Kind != tree.Dir {
		p.err = fmt.Errorf("rootfs: the base has no /var directory")
		return
	}
	entries := listUnder(t, "var")
	var moved []*tree.Entry
	for _, e := range entries {
		if e.Path == "var/run" || e.Path == "var/lock" || e.Path == "var/tmp" || strings.HasPrefix(e.Path, "var/tmp/") {
			continue
		}
		c := *e
		c.Path = FactoryVar + strings.TrimPrefix(e.Path, "var")
		if c.Kind == tree.Hardlink && strings.HasPrefix(c.Linkname, "var/") {
			c.Linkname = FactoryVar + strings.TrimPrefix(c.Linkname, "var")
		}
		// A relative symlink out of /var (log/README → ../../usr/share/doc/…) would dangle
		// in the factory copy: it becomes absolute. Links within /var stay relative, so they
		// work both in the factory copy and once copied to /var.
		if c.Kind == tree.Symlink && !strings.HasPrefix(c.Linkname, "/") {
			abs := "/" + tree.Clean(pathDir(e.Path)+"/"+c.Linkname)
			if abs != "/var" && !strings.HasPrefix(abs, "/var/") {
				c.Linkname = abs
			}
		}
		moved = append(moved, &c)
	}
	for _, e := range entries {
		t.Remove(e.Path)
	}
	if err := t.MkdirAll(FactoryVar, p.epoch); err != nil {
		p.err = err
		return
	}
	for _, e := range moved {
		if err := t.Put(e); err != nil {
			p.err = fmt.Errorf("rootfs: moving /var to /%s: %w", FactoryVar, err)
			return
		}
	}
	var b strings.Builder
	b.WriteString("# edgeimg: the base's /var, copied onto a fresh data partition (see /" + FactoryVar + ")\n")
	systemdOwns := map[string]bool{"var/lib": true, "var/log": true, "var/cache": true, "var/spool": true}
	for _, e := range moved {
		rel := strings.TrimPrefix(e.Path, FactoryVar+"/")
		depth := strings.Count(rel, "/")
		orig := "/var/" + rel
		top := strings.SplitN(rel, "/", 2)[0]
		switch {
		case depth == 0 && e.Kind == tree.Dir && systemdOwns["var/"+rel]:
			// systemd's tmpfiles.d/var.conf creates these; their children are copied below.
		case depth == 0, depth == 1 && systemdOwns["var/"+top]:
			fmt.Fprintf(&b, "C %s - - - - /%s\n", orig, e.Path)
		}
	}
	p.file("usr/lib/tmpfiles.d/edgeimg-var.conf", 0o644, b.String())
	p.added = append(p.added, "/"+FactoryVar)
}

// listUnder returns the entries strictly below dir, in walk order.
func listUnder(t *tree.Tree, dir string) []*tree.Entry {
	var out []*tree.Entry
	prefix := dir + "/"
	_ = t.Walk(func(e *tree.Entry) error {
		if strings.HasPrefix(e.Path, prefix) {
			out = append(out, e)
		}
		return nil
	})
	return out
}

func pathBase(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

func (p *prep) hosts(name string) {
	b, err := p.t.ReadFile("etc/hosts")
	if err != nil {
		b = []byte("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
	}
	var out []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.HasPrefix(l, "127.0.1.1") {
			continue
		}
		out = append(out, l)
	}
	out = append(out, "127.0.1.1\t"+name)
	p.file("etc/hosts", 0o644, strings.Join(out, "\n")+"\n")
}

// osRelease adds IMAGE_ID and IMAGE_VERSION (os-release(5)) to the base's os-release.
func (p *prep) osRelease(r Release) {
	if p.err != nil {
		return
	}
	target := "usr/lib/os-release"
	if e := p.t.Get("etc/os-release"); e != nil && e.Kind == tree.Regular {
		target = "etc/os-release"
	}
	b, err := p.t.ReadFile(target)
	if err != nil {
		return // a base without os-release keeps none
	}
	var out []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.HasPrefix(l, "IMAGE_ID=") || strings.HasPrefix(l, "IMAGE_VERSION=") {
			continue
		}
		out = append(out, l)
	}
	out = append(out, "IMAGE_ID="+r.Name, "IMAGE_VERSION="+r.Version)
	p.file(target, 0o644, strings.Join(out, "\n")+"\n")
}

func fstab(dataUUID string) string {
	return `# edgeimg: the root filesystem is a read-only A/B slot named by the kernel command line
# (root=PARTUUID=… ro), never checked or repaired (it is verified by its sha256 instead).
# The data partition is grown to the card and made on first boot, then mounted at /var.
proc            /proc   proc    defaults        0 0
tmpfs           /tmp    tmpfs   mode=1777,nosuid,nodev,size=25%  0 0
PARTUUID=` + dataUUID + ` /var ext4 defaults,noatime,x-systemd.makefs,x-systemd.growfs,x-systemd.requires=edgeimg-grow-data.service,x-systemd.after=edgeimg-grow-data.service 0 2
`
}

const sshdConfig = `# edgeimg: host keys live on the data partition (the root is read-only and shared by every
# device flashed with this image); edgeimg-ssh-keys.service makes them on first boot.
HostKey /var/lib/edgeimg/ssh/ssh_host_ed25519_key
HostKey /var/lib/edgeimg/ssh/ssh_host_ecdsa_key
HostKey /var/lib/edgeimg/ssh/ssh_host_rsa_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
`

const sshKeysUnit = `[Unit]
Description=edgeimg: create this device's SSH host keys on the data partition
DefaultDependencies=no
After=local-fs.target systemd-tmpfiles-setup.service
Before=ssh.service sshd.service
ConditionPathExists=!/var/lib/edgeimg/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -ec 'mkdir -p /var/lib/edgeimg/ssh; for t in ed25519 ecdsa rsa; do f=/var/lib/edgeimg/ssh/ssh_host_$${t}_key; [ -e $$f ] || ssh-keygen -q -N "" -t $$t -f $$f.tmp; [ -e $$f ] || { mv $$f.tmp.pub $$f.pub; mv $$f.tmp $$f; }; done; sync'

[Install]
WantedBy=multi-user.target
`

const machineIDUnit = `[Unit]
Description=edgeimg: keep this device's machine-id on the data partition
DefaultDependencies=no
RequiresMountsFor=/var
After=local-fs.target
Before=systemd-journal-flush.service sysinit.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -ec 'f=/var/lib/edgeimg/machine-id; mkdir -p /var/lib/edgeimg; if [ ! -s $$f ]; then cat /etc/machine-id > $$f.tmp; sync $$f.tmp; mv $$f.tmp $$f; fi; [ "$$(cat /etc/machine-id)" = "$$(cat $$f)" ] || mount --bind $$f /etc/machine-id'
`

const watchdogConf = `# edgeimg: systemd pets the Pi's hardware watchdog (config.txt dtparam=watchdog=on); a hung
# system reboots, and during a trial boot the firmware then returns to the committed slot.
[Manager]
RuntimeWatchdogSec=15
RebootWatchdogSec=2min
`
