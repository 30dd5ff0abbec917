//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/internal/testutil"
)

const (
	// bootTimeout bounds every QEMU run: a boot that hangs fails the test instead of CI.
	bootTimeout = 6 * time.Minute
	// growBy is what the raw image is enlarged by before the first boot, so that the data
	// partition's growth to the end of the "card" shows.
	growBy = 2 << 30
	// name and hostname of the test image.
	imageName = "e2e-device"
	hostname  = "e2e-node"
	// opsKey is the SSH key of the spec's user (a public key: nothing logs in with it).
	opsKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHMvdcj6hbtW3ZPwLTYgo2aNQS22DapHzrFhHBmU2PAY e2e@edgeimg"
)

// acceptableFailures are units of the base that may fail in the emulated boot, with why.
// Anything else in `systemctl --failed` fails the test. None so far: the Debian base boots
// under QEMU with no failed unit (the Pi-only parts, watchdog and Wi-Fi, only log warnings).
var acceptableFailures = map[string]string{}

// report is the part of NAME-BOARD.report.json the harness reads.
type report struct {
	Size       int64 `json:"size"`
	Partitions []struct {
		Number   int    `json:"number"`
		Role     string `json:"role"`
		Start    int64  `json:"start"`
		Size     int64  `json:"size"`
		Used     int64  `json:"used"`
		PartUUID string `json:"partuuid"`
		SHA256   string `json:"sha256"`
	} `json:"partitions"`
	Additions []string `json:"additions"`
}

type partition struct {
	Number      int
	Start, Size int64
	Used        int64 // bytes of the filesystem the builder wrote (0: unknown)
	PartUUID    string
	SHA256      string
}

func (r *report) part(t *testing.T, role string) partition {
	t.Helper()
	for _, p := range r.Partitions {
		if p.Role == role {
			return partition{p.Number, p.Start, p.Size, p.Used, p.PartUUID, p.SHA256}
		}
	}
	t.Fatalf("the build report has no %s partition", role)
	return partition{}
}

// TestBoot builds an image from a Debian arm64 base, boots it in QEMU as the Pi's firmware
// would, and checks the running system; then it updates the device over the air to release 2
// (slot B, trial boot, commit) and offers it a broken release 3, whose failed trial boot must
// bring it back to release 2 by itself.
func TestBoot(t *testing.T) {
	for _, tool := range []string{"qemu-system-aarch64", "mmdebstrap", "mcopy", "mtype", "fdtput", "fdtget", "sfdisk", "mkfs.vfat", "mke2fs", "debugfs"} {
		testutil.NeedTool(t, tool)
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the e2e base image is built as root (mmdebstrap --mode=root, mke2fs -d with owners)")
		}
		t.Skip("the e2e base image is built as root (mmdebstrap --mode=root, mke2fs -d with owners)")
	}
	h := newHarness(t)
	defer h.summary()

	h.phase("build edgeimg and the linux/arm64 agent")
	bin := filepath.Join(h.work, "bin")
	h.edgeimg = filepath.Join(bin, "edgeimg")
	h.goBuild(h.edgeimg, "./cmd/edgeimg")
	h.goBuild(filepath.Join(bin, "edgeimg-agent-linux-arm64"), "./cmd/edgeimg-agent", "GOOS=linux", "GOARCH=arm64")

	h.phase("base image (ci/basebuild/build-base.sh, cached in $EDGEIMG_E2E_CACHE)")
	base := filepath.Join(h.work, "base.img")
	h.run(h.root, "bash", "ci/basebuild/build-base.sh", base)

	h.phase("fleet server on the host's loopback (10.0.2.2 to the guest), trusting a new OTA key")
	otaKey := filepath.Join(h.specDir(), "keys", "ota")
	h.run(h.work, h.edgeimg, "keys", "create", "--out", otaKey)
	fl := h.startFleet(otaKey + ".pub")
	token := fl.token(t)

	h.phase("K3s payload: the k3s executable and the images on the loopback (registries.mirrors)")
	k := h.k3sPayload()
	h.k3s = &k
	if k.StandIn {
		t.Logf("K3S STAND-IN: /usr/local/bin/k3s is ci/e2e/k3s-standin, not K3s (no real arm64 K3s: set EDGEIMG_E2E_K3S=path); K3s itself is not exercised, the agent's K3s health checks and the payload's units are")
	}

	h.phase("edgeimg build: release 1, the card")
	v1 := h.build(base, release{version: "1", fleetCA: fl.caFile, fleetURL: fl.url})
	c := newCard(t, v1)

	h.phase("edgeimg build: releases 2 and 3, their update bundles (3 trusts another fleet CA)")
	v2 := h.build(base, release{version: "2", fleetCA: fl.caFile, fleetURL: fl.url})
	v3 := h.build(base, release{version: "3", fleetCA: h.otherFleetCA(), fleetURL: fl.url})

	h.phase("edgeimg personalize: the enrollment token and host name in device.yaml")
	h.run(h.work, h.edgeimg, "personalize", c.img, "--token", token, "--hostname", hostname)

	h.phase("enlarge the image by 2 GiB (a bigger card)")
	c.size = v1.rep.Size + growBy
	if err := os.Truncate(c.img, c.size); err != nil {
		t.Fatal(err)
	}

	h.phase("the firmware's part: autoboot.txt, boot A's kernel, initramfs and cmdline.txt, device tree")
	// A card just put in: the firmware boots autoboot.txt's default.
	r1 := h.prepare(c, "boot1", shutdown{End: endPowerOff}, modeReport)
	if r1.fb != (firmwareBoot{Partition: c.bootA.Number}) {
		t.Fatalf("the built card's autoboot.txt boots %v, want boot A (partition %d)", r1.fb, c.bootA.Number)
	}
	if r1.sysSHA != c.sysA.SHA256 {
		t.Fatalf("system A's sha256 is %s, the build report says %s", r1.sysSHA, c.sysA.SHA256)
	}

	h.phase("boot1: first boot of slot A")
	h.boot(r1, nil)
	var deviceID string
	t.Run("first boot", func(t *testing.T) {
		f := h.checkBoot(t, r1, shutdown{End: endPowerOff})
		con := r1.con
		t.Run("data partition mounted at /var and grown to the disk", func(t *testing.T) {
			h.checkData(t, con, f, c.data, c.size)
			if log := con.agentLines(); !strings.Contains(log, "grown from") {
				con.fail(t, "edgeimg-grow-data did not grow the partition on the first boot: %q", log)
			}
		})
		t.Run("builder's files and units are there", func(t *testing.T) { checkAdditions(t, con, f) })
		deviceID = fl.checkFleet(t, con, fleetWant{version: "1", slot: "a"})
		if h.k3s != nil {
			t.Run("heartbeats report the K3s node Ready", func(t *testing.T) { fl.checkNodeReady(t, con) })
		}
		t.Run("device.yaml consumed: token removed from the config partition", func(t *testing.T) {
			h.checkSettingsConsumed(t, con, c.img, c.config, token)
		})
	})
	first := r1.facts
	if first == nil {
		t.Fatalf("the first boot gave no report (console: %s): no second boot", r1.con.path)
	}

	h.phase("push release 2 to the fleet")
	fl.pushRelease(t, v2.update, "2")

	h.phase("the firmware's part after boot1")
	r2 := h.prepare(c, "boot2", parseShutdown(r1.con.text()), modeUpdate)

	h.phase("boot2: slot A again; after its report, release 2 rolled out: download to slot B, trial armed, reboot")
	var rollout2 error
	h.boot(r2, fl.rolloutAfterReport(t, "boot2", "2", &rollout2))
	t.Run("second boot", func(t *testing.T) {
		f := h.checkBoot(t, r2, shutdown{End: endRestart, Command: "0 tryboot"})
		con := r2.con
		t.Run("device identity kept on /var", func(t *testing.T) {
			if f["boot_id"] == first["boot_id"] {
				con.fail(t, "the same boot_id twice (%s): this is not a second boot", f["boot_id"])
			}
			for _, k := range []string{"machine_id", "ssh_host_ed25519"} {
				if f[k] != first[k] {
					con.fail(t, "%s changed across reboots: %q, then %q", k, first[k], f[k])
				}
			}
		})
		t.Run("machine-id given by the early init, before systemd", func(t *testing.T) {
			// Without it systemd starts every boot with a random machine-id and the journal
			// and every first-boot condition see a new machine.
			if strings.Contains(con.text(), "Initializing machine ID from random generator") {
				con.fail(t, "systemd made a random machine-id on the second boot: the early init did not give it the kept one")
			}
		})
		t.Run("data partition kept, no second growth", func(t *testing.T) {
			h.checkData(t, con, f, c.data, c.size)
			if log := con.agentLines(); !strings.Contains(log, "already fills the card") {
				con.fail(t, "edgeimg-grow-data on the second boot: %q, want \"already fills the card\"", log)
			}
		})
		t.Run("no second enrollment", func(t *testing.T) {
			if deviceID == "" {
				t.Skip("the first boot did not enroll")
			}
			fl.checkFleet(t, con, fleetWant{id: deviceID, version: "1", slot: "a"})
		})
		t.Run("the device took release 2", func(t *testing.T) {
			if rollout2 != nil {
				con.fail(t, "%v (server log: %s)", rollout2, fl.log.Name())
			}
		})
	})
	if rollout2 != nil {
		t.Fatalf("no update to release 2: %v", rollout2)
	}
	h.update(c, fl, r2, deviceID, v2, v3)
}

// checkBoot runs the checks every boot must pass — the slot the firmware chose is the one
// running, with its command line, read-only; identity and journal kept on /var; the device
// tree as the firmware sets it; the run ends as end; the booted system slot's bytes unchanged
// — and returns the guest's facts; it stops the calling test when there are none.
func (h *harness) checkBoot(t *testing.T, r *bootRun, end shutdown) map[string]string {
	con, f := r.con, r.facts
	t.Run("reaches multi-user.target", func(t *testing.T) {
		// e2e-report.service runs after multi-user.target; systemd's own "Reached target"
		// line is not always printed (it stops writing status lines on a busy console).
		if f == nil || f["multi_user"] != "active" {
			con.fail(t, "systemd did not reach multi-user.target (no e2e report, or multi-user.target %q)", f["multi_user"])
			return
		}
		var usec int64
		fmt.Sscan(f["multi_user_usec"], &usec)
		d, _ := con.mark("E2E-BEGIN")
		t.Logf("multi-user.target reached %.1fs after the kernel started; the report came %.1fs after QEMU started",
			float64(usec)/1e6, d.Seconds())
	})
	if f == nil {
		t.Fatalf("no E2E report on the console (%s): the other checks need it", con.path)
	}
	t.Run(fmt.Sprintf("kernel command line from boot %s", strings.ToUpper(r.slot.name)), func(t *testing.T) {
		for _, a := range []string{"root=PARTUUID=" + r.slot.sys.PartUUID, "ro", "panic=10", "cgroup_memory=1", "cgroup_enable=memory"} {
			if !hasField(f["cmdline"], a) {
				con.fail(t, "/proc/cmdline lacks %q: %s", a, f["cmdline"])
			}
		}
	})
	t.Run(fmt.Sprintf("root is read-only system %s", strings.ToUpper(r.slot.name)), func(t *testing.T) {
		if opts := strings.Split(f["root_options"], ","); opts[0] != "ro" {
			con.fail(t, "/ is mounted %q, not ro", f["root_options"])
		}
		if want := fmt.Sprintf("/dev/vda%d", r.slot.sys.Number); f["root_source"] != want {
			con.fail(t, "/ is %s, not system %s (%s)", f["root_source"], strings.ToUpper(r.slot.name), want)
		}
	})
	t.Run("no failed units", func(t *testing.T) { checkFailed(t, con, f) })
	if h.k3s != nil {
		t.Run("K3s started by the agent, its payload visible", func(t *testing.T) { h.checkK3s(t, con, f) })
	}
	t.Run("machine-id made and kept on /var", func(t *testing.T) {
		id := f["machine_id"]
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
			con.fail(t, "/etc/machine-id is %q", id)
		}
		if f["machine_id_var"] != id {
			con.fail(t, "/var/lib/edgeimg/machine-id is %q, /etc/machine-id %q", f["machine_id_var"], id)
		}
		// The slot's /etc/machine-id is empty: systemd binds a transient one on the first boot
		// (kept on /var by edgeimg-machine-id.service), edgeimg's early init binds the kept
		// one from /run on every later boot, before systemd reads it.
		if f["machine_id_mount"] == "" {
			con.fail(t, "/etc/machine-id is not bind-mounted: the read-only slot's own file is in use")
		}
	})
	t.Run("journal kept under the device's machine-id", func(t *testing.T) {
		// journald takes the machine-id when it starts; journalctl shows only that machine's
		// journal, so a different one leaves `journalctl` empty and a directory behind.
		if f["journal_dirs"] != f["machine_id"] {
			con.fail(t, "journal directories %q (in /var/log/journal and /run/log/journal), want only the machine-id %q: journald started with another machine-id", f["journal_dirs"], f["machine_id"])
		}
		if f["journal_lines"] == "0" || f["journal_lines"] == "" {
			con.fail(t, "journalctl -b shows nothing (%q lines)", f["journal_lines"])
		}
	})
	t.Run("SSH host keys made on /var and used", func(t *testing.T) { checkSSH(t, con, f) })
	t.Run("firmware's view in the device tree", func(t *testing.T) {
		want := []string{fmt.Sprint(r.fb.Partition), fmt.Sprint(b2i(r.fb.Tryboot)), fmt.Sprint(eepromBuild.Unix())}
		got := []string{f["bootloader_partition"], f["bootloader_tryboot"], f["bootloader_build_timestamp"]}
		if !slices.Equal(got, want) {
			con.fail(t, "/proc/device-tree/chosen/bootloader: partition, tryboot, build-timestamp %q, want %q", got, want)
		}
	})
	t.Run(fmt.Sprintf("the release is %s", r.slot.version), func(t *testing.T) {
		if f["release_version"] != r.slot.version || f["e2e_release"] != r.slot.version {
			con.fail(t, "release.json says version %q and /etc/e2e-release %q, want %s (the release in slot %s)", f["release_version"], f["e2e_release"], r.slot.version, r.slot.name)
		}
	})
	t.Run("ends with a "+end.String(), func(t *testing.T) {
		got := parseShutdown(con.text())
		if got.End != end.End || got.trybootRequested() != end.trybootRequested() || got.Panic != end.Panic {
			con.fail(t, "QEMU: %v; the run ended with %s, want %s", con.err, got, end)
		}
	})
	t.Run("booted slot is unchanged", func(t *testing.T) {
		if got := partSHA256(t, r.card.img, r.slot.sys); got != r.sysSHA {
			t.Errorf("system %s's sha256 after the boot is %s, before it %s: the booted slot was written", strings.ToUpper(r.slot.name), got, r.sysSHA)
		}
	})
	return f
}

// checkAdditions checks what the builder added: every path release.json lists, the spec's
// host name and user, and the redirections of /etc into /run and the data partition.
func checkAdditions(t *testing.T, con *console, f map[string]string) {
	t.Helper()
	if f["additions_missing"] != "" {
		con.fail(t, "paths the builder added (release.json) are missing: %s", f["additions_missing"])
	}
	checks := map[string]string{
		"hostname":       hostname,
		"resolv_conf":    "../run/NetworkManager/resolv.conf",
		"nm_connections": "/var/lib/edgeimg/etc/NetworkManager/system-connections",
		"grow_active":    "active",
		"nm_active":      "active",
	}
	for k, want := range checks {
		if f[k] != want {
			con.fail(t, "%s is %q, want %q", k, f[k], want)
		}
	}
	if !strings.Contains(f["ops_authorized_keys"], opsKey) {
		con.fail(t, "/home/ops/.ssh/authorized_keys lacks the spec's key: %q", f["ops_authorized_keys"])
	}
	if !hasField(f["ops_groups"], "sudo") {
		con.fail(t, "ops is not in sudo: %q", f["ops_groups"])
	}
	if !strings.Contains(f["release"], `"name": "`+imageName+`"`) {
		con.fail(t, "/usr/lib/edgeimg/release.json: %q", f["release"])
	}
}

// checkData checks that the data partition is mounted at /var, ext4, and that the partition
// and its filesystem reach the end of the disk (rounded down to 4 MiB, as grow-data does).
func (h *harness) checkData(t *testing.T, con *console, f map[string]string, data partition, disk int64) {
	t.Helper()
	if want := fmt.Sprintf("vda%d", data.Number); f["data_partition"] != want || f["var_fstype"] != "ext4" {
		con.fail(t, "/var is %s (%s), want ext4 on %s", f["var_source"], f["var_fstype"], want)
	}
	n := func(k string) int64 {
		var v int64
		if _, err := fmt.Sscan(f[k], &v); err != nil {
			con.fail(t, "%s is %q, not a number", k, f[k])
		}
		return v
	}
	diskBytes, start, size, fsSize := n("disk_bytes"), n("data_start"), n("data_bytes"), n("var_size")
	if diskBytes != disk {
		con.fail(t, "the guest's disk has %d bytes, the image %d", diskBytes, disk)
	}
	if start != data.Start {
		con.fail(t, "the data partition starts at %d, the build report says %d", start, data.Start)
	}
	const align = 4 << 20
	if end := start + size; end != disk/align*align {
		con.fail(t, "the data partition ends at %d, not at the disk's end %d (rounded down to 4 MiB): it was not grown", end, disk/align*align)
	}
	// ext4's own overhead (inode tables, journal) is well under 10%.
	if fsSize < size*9/10 || fsSize <= data.Size {
		con.fail(t, "the /var filesystem has %d bytes, its partition %d (built with %d): the filesystem was not grown", fsSize, size, data.Size)
	}
	t.Logf("data partition: %d -> %d bytes; /var filesystem %d bytes; disk %d bytes", data.Size, size, fsSize, diskBytes)
}

func checkFailed(t *testing.T, con *console, f map[string]string) {
	t.Helper()
	var bad []string
	for _, u := range strings.Fields(f["failed"]) {
		if why, ok := acceptableFailures[u]; ok {
			t.Logf("%s failed, accepted: %s", u, why)
			continue
		}
		bad = append(bad, u)
	}
	if len(bad) > 0 {
		con.fail(t, "failed units: %s (see E2E-SECTION failed and errors on the console)", strings.Join(bad, " "))
	}
	// A unit with Restart= never shows as failed while it keeps restarting: edgeimg's own
	// units must not have failed even once.
	for _, l := range strings.Split(con.text(), "\n") {
		if strings.Contains(l, "edgeimg-") && strings.Contains(l, "Failed with result") {
			con.fail(t, "an edgeimg unit failed during the boot: %s", strings.TrimSpace(l))
		}
	}
}

func checkSSH(t *testing.T, con *console, f map[string]string) {
	t.Helper()
	for _, k := range []string{"ed25519", "ecdsa", "rsa"} {
		for _, name := range []string{"ssh_host_" + k + "_key", "ssh_host_" + k + "_key.pub"} {
			if !hasField(f["ssh_keys"], name) {
				con.fail(t, "/var/lib/edgeimg/ssh lacks %s: %q", name, f["ssh_keys"])
			}
		}
	}
	for _, k := range strings.Fields(f["sshd_hostkeys"]) {
		if !strings.HasPrefix(k, "/var/lib/edgeimg/ssh/") {
			con.fail(t, "sshd uses host key %s, outside the data partition", k)
		}
	}
	if f["sshd_hostkeys"] == "" || f["ssh_active"] != "active" {
		con.fail(t, "ssh.service is %q with host keys %q", f["ssh_active"], f["sshd_hostkeys"])
	}
}

// harness holds the paths of one run and times its phases.
type harness struct {
	t      *testing.T
	root   string // the repository
	work   string // build/e2e, or $EDGEIMG_E2E_WORK
	start  time.Time
	last   string
	lastAt time.Time
	times  []string
	runs   []string // one line per QEMU run: slot, mode, time, end

	edgeimg string // the edgeimg binary built for the host
	k3s     *k3sPayload
}

func newHarness(t *testing.T) *harness {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("the repository root: %v", err)
	}
	work := os.Getenv("EDGEIMG_E2E_WORK")
	if work == "" {
		work = filepath.Join(root, "build", "e2e")
	}
	// Only this run's files: console logs and images of an earlier run would mislead.
	if err := os.RemoveAll(work); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("work directory: %s", work)
	h := &harness{t: t, root: root, work: work, start: time.Now()}
	return h
}

// phase logs the start of a phase with the time since the start, and the previous phase's
// duration.
func (h *harness) phase(name string) {
	now := time.Now()
	if h.last != "" {
		h.times = append(h.times, fmt.Sprintf("%7.1fs  %s", now.Sub(h.lastAt).Seconds(), h.last))
	}
	h.last, h.lastAt = name, now
	h.t.Logf("=== e2e [%.0fs] %s", now.Sub(h.start).Seconds(), name)
}

func (h *harness) summary() {
	h.phase("")
	h.t.Logf("e2e phase times:\n%s\n%7.1fs  total\nQEMU runs:\n%s", strings.Join(h.times, "\n"), time.Since(h.start).Seconds(), strings.Join(h.runs, "\n"))
}

// run runs a command in dir with its output on the test's stderr (live in CI logs).
func (h *harness) run(dir, name string, args ...string) {
	h.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		h.t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
}

// outputTimeout bounds the short helper commands of output (mtools, fdtput, QEMU's dumpdtb).
const outputTimeout = 2 * time.Minute

// output runs a short command and returns its standard output; it fails the test when the
// command fails or runs longer than outputTimeout.
func (h *harness) output(name string, args ...string) string {
	h.t.Helper()
	var stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), outputTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		h.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func (h *harness) goBuild(out, pkg string, env ...string) {
	h.t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = h.root
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		h.t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// release is one build of the test image's spec: its version, and the fleet it trusts.
type release struct {
	version           string
	fleetURL, fleetCA string
}

// built is a build's output: the raw image, its report, and its update bundle.
type built struct {
	version string
	img     string
	rep     report
	update  string // NAME-BOARD.update
}

// specDir holds the specs of the builds, their overlays and the OTA signing key.
func (h *harness) specDir() string { return filepath.Join(h.work, "spec") }

// build writes the spec of release rel and runs `edgeimg build` into out-vVERSION (the
// builds share their cache directory, so the base is unpacked once).
func (h *harness) build(base string, rel release) built {
	h.t.Helper()
	spec := h.writeSpec(base, rel)
	out := filepath.Join(h.work, "out-v"+rel.version)
	h.run(h.work, h.edgeimg, "build", "--board", "rpi4", "-c", spec, "-o", out, "--cache-dir", filepath.Join(h.work, "cache"))
	b := built{version: rel.version, img: filepath.Join(out, imageName+"-rpi4.img"), update: filepath.Join(out, imageName+"-rpi4.update")}
	raw, err := os.ReadFile(filepath.Join(out, imageName+"-rpi4.report.json"))
	if err != nil {
		h.t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &b.rep); err != nil {
		h.t.Fatalf("reading the build report of release %s: %v", rel.version, err)
	}
	if _, err := os.Stat(b.update); err != nil {
		h.t.Fatalf("release %s: no update bundle: %v", rel.version, err)
	}
	return b
}

// writeSpec writes the spec of a release of the test image (edgeimg-vVERSION.yaml) and its
// overlays: the e2e-report unit, which prints what the checks need once multi-user.target is
// reached and powers off, shared by every release; and /etc/e2e-release, the release's own.
func (h *harness) writeSpec(base string, rel release) string {
	h.t.Helper()
	dir := h.specDir()
	ov := filepath.Join(dir, "overlay")
	relOv := filepath.Join(dir, "release-"+rel.version)
	files := map[string]string{
		filepath.Join(ov, "usr/local/libexec/e2e-report"):          "guest/e2e-report",
		filepath.Join(ov, "etc/systemd/system/e2e-report.service"): "guest/e2e-report.service",
	}
	for dst, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			h.t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(dst, "e2e-report") {
			mode = 0o755
		}
		h.writeFile(dst, b, mode)
	}
	h.writeFile(filepath.Join(relOv, "etc/e2e-release"), []byte(rel.version+"\n"), 0o644)
	wants := filepath.Join(ov, "etc/systemd/system/multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		h.t.Fatal(err)
	}
	link := filepath.Join(wants, "e2e-report.service")
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		h.t.Fatal(err)
	}
	if err := os.Symlink("/etc/systemd/system/e2e-report.service", link); err != nil {
		h.t.Fatal(err)
	}
	spec := fmt.Sprintf(`# The end-to-end test's image (ci/e2e), release %[7]s: the Debian base of ci/basebuild, remastered.
name: %[1]s
board: rpi4
version: %[7]q
hostname: %[2]s
base:
  image: %[3]s
overlays: [overlay, release-%[7]s]
users:
  - name: ops
    groups: [sudo]
    sshAuthorizedKeys: [%[4]q]
layout:
  bootSize: 256MiB
  systemSize: 2GiB
  dataMinSize: 256MiB
output:
  compress: none
fleet:
  url: %[5]s
  ca: %[6]s
  heartbeat: %[8]s
ota:
  signingKey: keys/ota.key
  healthTimeout: %[9]s
`, imageName, hostname, base, opsKey, rel.fleetURL, rel.fleetCA, rel.version, fleetHeartbeat, healthTimeout)
	if h.k3s != nil {
		spec += h.k3s.Spec
	}
	p := filepath.Join(dir, "edgeimg-v"+rel.version+".yaml")
	h.writeFile(p, []byte(spec), 0o644)
	return p
}

func (h *harness) writeFile(p string, b []byte, mode os.FileMode) {
	h.t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		h.t.Fatal(err)
	}
}

// firmwareView is what the Pi's firmware hands the kernel: the kernel and initramfs of the
// boot partition, its cmdline.txt, and a device tree with /chosen/bootloader.
type firmwareView struct {
	kernel, initrd, cmdline, dtb string
}

// eepromBuild is the build time of the bootloader EEPROM the harness's device tree shows
// (/chosen/bootloader/build-timestamp): one with tryboot_a_b (2022-11-25 or newer), which the
// agent checks before its first update.
var eepromBuild = time.Date(2024, 4, 15, 0, 0, 0, 0, time.UTC)

// firmware plays the Pi firmware's part for the boot fb of boot partition bp: it copies
// kernel8.img and initramfs8 out of the FAT partition with mtools, reads cmdline.txt, and
// patches QEMU's own device tree with /chosen/bootloader partition, tryboot and
// build-timestamp, as the firmware sets them. The files go to firmware-NAME in the work
// directory.
func (h *harness) firmware(name, img string, bp partition, fb firmwareBoot) firmwareView {
	h.t.Helper()
	dir := filepath.Join(h.work, "firmware-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	fat := fmt.Sprintf("%s@@%d", img, bp.Start)
	v := firmwareView{kernel: filepath.Join(dir, "kernel8.img"), initrd: filepath.Join(dir, "initramfs8"), dtb: filepath.Join(dir, "bootloader.dtb")}
	h.output("mcopy", "-n", "-i", fat, "::kernel8.img", v.kernel)
	h.output("mcopy", "-n", "-i", fat, "::initramfs8", v.initrd)
	v.cmdline = strings.TrimSpace(h.output("mtype", "-i", fat, "::cmdline.txt"))
	h.output("qemu-system-aarch64", append(machineArgs(), "-machine", "dumpdtb="+v.dtb)...)
	h.output("fdtput", "-c", v.dtb, "/chosen/bootloader")
	cells := [][2]string{
		{"partition", fmt.Sprint(fb.Partition)},
		{"tryboot", fmt.Sprint(b2i(fb.Tryboot))},
		{"build-timestamp", fmt.Sprint(eepromBuild.Unix())},
	}
	for _, c := range cells {
		h.output("fdtput", "-t", "u", v.dtb, "/chosen/bootloader", c[0], c[1])
	}
	for _, c := range cells {
		if got := strings.TrimSpace(h.output("fdtget", "-t", "u", v.dtb, "/chosen/bootloader", c[0])); got != c[1] {
			h.t.Fatalf("patched device tree: /chosen/bootloader/%s is %q, want %s", c[0], got, c[1])
		}
	}
	return v
}

// machineArgs is the emulated machine; the device tree QEMU dumps depends on it, so the
// dump and the boot use the same arguments.
func machineArgs() []string {
	return []string{"-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "2048", "-nodefaults", "-display", "none"}
}

// Modes of the guest's report (the kernel argument edgeimg.e2e=MODE).
const (
	// modeReport: the guest reports and powers off.
	modeReport = "report"
	// modeUpdate: the guest reports and leaves the power to the agent, which reboots when an
	// update wants it.
	modeUpdate = "update"
)

// boot runs QEMU on the card with the firmware's view r.fw, the serial console going to
// NAME.console.log in the work directory, until the guest powers off or restarts, or
// bootTimeout passes. during, when not nil, runs beside QEMU with the console; its ctx ends
// when QEMU exits, and stop ends QEMU early. boot returns when both have returned.
func (h *harness) boot(r *bootRun, during func(ctx context.Context, con *console, stop func())) {
	h.t.Helper()
	con := &console{path: filepath.Join(h.work, r.name+".console.log"), start: time.Now(), marks: map[string]time.Duration{}}
	r.con = con
	file, err := os.Create(con.path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer file.Close()
	con.file = file
	// The console of the image, with the emulated board's serial port as the last console=
	// (so /dev/console), which the Pi's UART alias serial0 is not here; and the report's mode.
	cmdline := r.fw.cmdline + " console=ttyAMA0,115200"
	if r.mode != modeReport {
		cmdline += " edgeimg.e2e=" + r.mode
	}
	args := append(machineArgs(),
		"-kernel", r.fw.kernel, "-initrd", r.fw.initrd, "-dtb", r.fw.dtb, "-append", cmdline,
		"-drive", "file="+r.card.img+",format=raw,if=virtio,cache=unsafe",
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile=",
		"-serial", "stdio", "-monitor", "none", "-no-reboot")
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	qctx, stop := context.WithCancel(ctx)
	defer stop()
	cmd := exec.CommandContext(qctx, "qemu-system-aarch64", args...)
	cmd.Stdout, cmd.Stderr = con, con
	cmd.WaitDelay = 10 * time.Second
	h.t.Logf("qemu-system-aarch64 %s", strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		h.t.Fatalf("starting QEMU: %v", err)
	}
	var wg sync.WaitGroup
	if during != nil {
		wg.Go(func() { during(qctx, con, stop) })
	}
	con.err = cmd.Wait()
	stopped := qctx.Err() != nil
	stop()
	wg.Wait()
	switch {
	case ctx.Err() != nil:
		con.err = fmt.Errorf("no power-off or restart within %v: killed (%v)", bootTimeout, con.err)
	case stopped:
		con.err = fmt.Errorf("stopped by the harness (%v)", con.err)
	}
	r.facts = con.facts()
	h.t.Logf("%s: QEMU ran %.1fs (%v), the run ended with %s; console: %s", r.name, time.Since(con.start).Seconds(), con.err, parseShutdown(con.text()), con.path)
	h.runs = append(h.runs, fmt.Sprintf("%-6s %-28s %6.1fs  %s", r.name, r.describe(), time.Since(con.start).Seconds(), parseShutdown(con.text())))
	if con.err != nil {
		// Nothing below makes sense without the console: show its end now.
		h.t.Logf("console (last 150 lines):\n%s", con.tail(150))
	}
}

// console collects the serial console, notes when marker lines first appear, and saves it.
type console struct {
	path  string
	file  *os.File
	start time.Time
	err   error

	mu      sync.Mutex
	buf     bytes.Buffer
	scanned int
	marks   map[string]time.Duration
	shown   bool
}

var markers = []string{"E2E-BEGIN", "E2E-END", "Run /init as init process", "Welcome to ", "reboot: Power down", "reboot: Restarting system"}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if _, err := c.file.Write(p); err != nil {
		return 0, err
	}
	// Scan the complete lines not yet scanned.
	for {
		rest := c.buf.Bytes()[c.scanned:]
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		line := plain(string(rest[:i]))
		c.scanned += i + 1
		for _, m := range markers {
			if _, seen := c.marks[m]; !seen && strings.Contains(line, m) {
				c.marks[m] = time.Since(c.start)
			}
		}
	}
	return len(p), nil
}

func (c *console) mark(m string) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.marks[m]
	return d, ok
}

// await waits until the console has shown marker (one of markers), or ctx ends.
func (c *console) await(ctx context.Context, marker string) bool {
	for {
		if _, ok := c.mark(marker); ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}

func (c *console) text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return plain(c.buf.String())
}

// ansi matches the terminal escapes systemd colours its status lines with.
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// plain returns console text without terminal escapes and carriage returns.
func plain(s string) string {
	return strings.ReplaceAll(ansi.ReplaceAllString(s, ""), "\r", "")
}

func (c *console) tail(n int) string {
	lines := strings.Split(c.text(), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// agentLines returns what edgeimg-agent wrote on the console (its units log to it).
func (c *console) agentLines() string {
	var out []string
	for _, l := range strings.Split(c.text(), "\n") {
		if _, msg, ok := strings.Cut(l, "edgeimg-agent["); ok {
			out = append(out, msg)
		}
	}
	return strings.Join(out, "\n")
}

// fact is an "E2E key=value" line of the guest's report. It need not start the line: the
// serial getty's login prompt can land in front of it.
var fact = regexp.MustCompile(`E2E ([a-z0-9_]+)=(.*)$`)

// facts returns the E2E key=value lines the guest's e2e-report printed, nil without a report.
func (c *console) facts() map[string]string {
	text := c.text()
	i := strings.Index(text, "E2E-BEGIN")
	if i < 0 {
		return nil
	}
	f := map[string]string{}
	for _, l := range strings.Split(text[i:], "\n") {
		if strings.HasSuffix(l, "E2E-END") {
			break
		}
		if m := fact.FindStringSubmatch(l); m != nil {
			f[m[1]] = m[2]
		}
	}
	return f
}

// fail fails a check, with the console's report (or, without one, its end) shown once per
// boot and its path every time.
func (c *console) fail(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Errorf(format, args...)
	c.mu.Lock()
	shown := c.shown
	c.shown = true
	c.mu.Unlock()
	if shown {
		t.Logf("console: %s", c.path)
		return
	}
	text := c.text()
	if i := strings.Index(text, "E2E-BEGIN"); i >= 0 {
		t.Logf("console %s, the guest's report:\n%s", c.path, text[i:])
		return
	}
	t.Logf("console %s (last 200 lines):\n%s", c.path, c.tail(200))
}

// partSHA256 hashes a partition's bytes in the image.
func partSHA256(t *testing.T, img string, p partition) string {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hash := sha256.New()
	if _, err := io.Copy(hash, io.NewSectionReader(f, p.Start, p.Size)); err != nil {
		t.Fatalf("hashing partition %d: %v", p.Number, err)
	}
	return hex.EncodeToString(hash.Sum(nil))
}
