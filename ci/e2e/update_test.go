//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/ota"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/pki"
	"github.com/edgeimg/edgeimg/hw/rpi4"
)

// healthTimeout is the test image's ota.healthTimeout (the smallest the spec allows): how long
// the broken release 3 tries to become healthy before the device goes back.
const healthTimeout = "1m"

// card is the emulated SD card: the raw image release 1 was built as, enlarged, and what the
// harness expects each slot to hold.
type card struct {
	img  string
	size int64
	// The partitions, from release 1's build report.
	config, data partition
	bootA, sysA  partition
	bootB, sysB  partition
	// holds is the release each slot ("a", "b") holds.
	holds map[string]string
}

func newCard(t *testing.T, b built) *card {
	t.Helper()
	c := &card{img: b.img, size: b.rep.Size, holds: map[string]string{"a": b.version}}
	c.config, c.data = b.rep.part(t, "config"), b.rep.part(t, "data")
	c.bootA, c.bootB = b.rep.part(t, "boot-a"), b.rep.part(t, "boot-b")
	c.sysA, c.sysB = b.rep.part(t, "system-a"), b.rep.part(t, "system-b")
	if c.sysA.SHA256 == "" {
		t.Fatal("the build report has no sha256 for system-a")
	}
	return c
}

// slotInfo is a slot of the card: its name, partitions and the release it should hold.
type slotInfo struct {
	name      string
	boot, sys partition
	version   string
}

// slot returns the slot whose boot partition is number n.
func (c *card) slot(n int) (slotInfo, bool) {
	switch n {
	case c.bootA.Number:
		return slotInfo{"a", c.bootA, c.sysA, c.holds["a"]}, true
	case c.bootB.Number:
		return slotInfo{"b", c.bootB, c.sysB, c.holds["b"]}, true
	}
	return slotInfo{}, false
}

// bootRun is one QEMU run: what the firmware chose, how the harness ran it, what it saw.
type bootRun struct {
	name   string
	card   *card
	fb     firmwareBoot
	slot   slotInfo
	fw     firmwareView
	mode   string
	sysSHA string // the booted system partition's sha256 before the run

	con   *console
	facts map[string]string
}

func (r *bootRun) describe() string {
	return fmt.Sprintf("slot %s v%s tryboot=%d %s", r.slot.name, r.slot.version, b2i(r.fb.Tryboot), r.mode)
}

// prepare plays the firmware before run name, the previous one having ended with after: it
// reads autoboot.txt from the card's config partition, picks the boot partition as the
// firmware does, and gives the guest that partition's kernel, initramfs and command line and
// the firmware's device tree. The command line must name the slot's own system partition.
func (h *harness) prepare(c *card, name string, after shutdown, mode string) *bootRun {
	t := h.t
	t.Helper()
	autoboot := h.readAutoboot(c)
	fb, err := firmwareDecide(autoboot, after)
	if err != nil {
		t.Fatalf("%s, as the firmware: %v", name, err)
	}
	sl, ok := c.slot(fb.Partition)
	if !ok {
		t.Fatalf("%s: autoboot.txt sends the firmware to partition %d, neither slot's boot partition", name, fb.Partition)
	}
	r := &bootRun{name: name, card: c, fb: fb, slot: sl, mode: mode}
	r.fw = h.firmware(name, c.img, sl.boot, fb)
	if !hasField(r.fw.cmdline, "root=PARTUUID="+sl.sys.PartUUID) {
		t.Fatalf("%s: cmdline.txt of boot %s (partition %d) does not name system %s (PARTUUID %s): %q",
			name, strings.ToUpper(sl.name), sl.boot.Number, strings.ToUpper(sl.name), sl.sys.PartUUID, r.fw.cmdline)
	}
	r.sysSHA = partSHA256(t, c.img, sl.sys)
	t.Logf("%s: after a %s the firmware boots %v: slot %s (release %s)", name, after, fb, sl.name, sl.version)
	return r
}

// readAutoboot reads autoboot.txt from the card's config partition (mtools).
func (h *harness) readAutoboot(c *card) []byte {
	h.t.Helper()
	return []byte(h.output("mtype", "-i", fmt.Sprintf("%s@@%d", c.img, c.config.Start), "::autoboot.txt"))
}

// readBootRelease reads edgeimg/release.json from a boot partition (mtools): the release the
// slot holds, as the builder copied it there.
func readBootRelease(img string, boot partition) (ota.Release, error) {
	var r ota.Release
	out, err := runOut("mtype", "-i", fmt.Sprintf("%s@@%d", img, boot.Start), "::edgeimg/release.json")
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return r, fmt.Errorf("edgeimg/release.json of partition %d: %w", boot.Number, err)
	}
	return r, nil
}

// readState reads the agent's update state (ota.StateFile, under /var) from the card's data
// partition with debugfs; nil when there is none.
func readState(img string, data partition) (*ota.State, string, error) {
	p := "/" + strings.TrimPrefix(ota.StateFile, "var/")
	out, err := runOut("debugfs", "-R", "cat "+p, fmt.Sprintf("%s?offset=%d", img, data.Start))
	if err != nil {
		return nil, "", fmt.Errorf("debugfs cat %s: %w", p, err)
	}
	if strings.TrimSpace(out) == "" {
		// debugfs says "File not found" on stderr and exits 0.
		return nil, "", nil
	}
	var s ota.State
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return nil, out, fmt.Errorf("%s on the data partition: %w", ota.StateFile, err)
	}
	return &s, out, nil
}

// otherFleetCA makes a second fleet CA, which no fleet server uses: release 3 trusts it
// instead of the real one, so on its trial boot the agent cannot reach its fleet.
func (h *harness) otherFleetCA() string {
	h.t.Helper()
	dir := filepath.Join(h.work, "fleet-other")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := pki.Init(dir, []string{guestHost}, time.Now()); err != nil {
		h.t.Fatalf("second fleet pki: %v", err)
	}
	return filepath.Join(dir, pki.CAFile)
}

// checkArmed checks what the device left after run r, which took the update to version into
// slot sl: the run ended with `reboot "0 tryboot"`, the agent's state says the trial is armed,
// autoboot.txt tries the slot while the default stays the running one, and the slot holds the
// release: its system partition starts with the bytes of the release's system filesystem as
// built (the bundle carries them; what lies beyond is free space to that filesystem), its
// boot partition's release.json is the release's.
func (h *harness) checkArmed(t *testing.T, r *bootRun, version string, sl slotInfo, b built) {
	c := r.card
	t.Run("the device asked for a trial boot", func(t *testing.T) {
		if end := parseShutdown(r.con.text()); !end.trybootRequested() {
			r.con.fail(t, "the run ended with %s, not `reboot \"0 tryboot\"`", end)
		}
	})
	t.Run("update state: trial armed", func(t *testing.T) {
		s, raw, err := readState(c.img, c.data)
		if err != nil || s == nil {
			r.con.fail(t, "the agent's update state on /var: %v (%q)", err, raw)
			return
		}
		t.Logf("%s: %s", ota.StateFile, strings.Join(strings.Fields(raw), " "))
		if s.Version != version || s.Phase != api.UpdateRebooting || s.Slot != sl.name {
			r.con.fail(t, "the update state is version %q phase %q slot %q, want %s %s %s", s.Version, s.Phase, s.Slot, version, api.UpdateRebooting, sl.name)
		}
	})
	t.Run("autoboot.txt tries the written slot, default unchanged", func(t *testing.T) {
		def, try, ok := rpi4.ParseAutoboot(h.readAutoboot(c))
		if !ok || def != r.slot.boot.Number || try != sl.boot.Number {
			t.Errorf("autoboot.txt: default %d, tryboot %d (ok %v); want default %d (the running slot %s), tryboot %d", def, try, ok, r.slot.boot.Number, r.slot.name, sl.boot.Number)
		}
	})
	t.Run(fmt.Sprintf("slot %s holds release %s", sl.name, version), func(t *testing.T) {
		built := b.rep.part(t, "system-a")
		if built.Used <= 0 || built.Used > sl.sys.Size {
			t.Fatalf("release %s's build report gives system-a %d used bytes", version, built.Used)
		}
		want := partSHA256(t, b.img, partition{Number: built.Number, Start: built.Start, Size: built.Used})
		got := partSHA256(t, c.img, partition{Number: sl.sys.Number, Start: sl.sys.Start, Size: built.Used})
		if got != want {
			t.Errorf("the first %d bytes of system %s hash to %s, release %s's system filesystem (its image's system A) to %s", built.Used, strings.ToUpper(sl.name), got, version, want)
		}
		rel, err := readBootRelease(c.img, sl.boot)
		if err != nil {
			t.Errorf("boot %s: %v", strings.ToUpper(sl.name), err)
		} else if rel.Version != version {
			t.Errorf("boot %s's edgeimg/release.json has version %q, want %s", strings.ToUpper(sl.name), rel.Version, version)
		}
	})
}

// rolloutAfterReport returns a boot's side task: once the guest's report is out (an update's
// reboot must not cut it short), it rolls release version out and watches the device take it.
// When the device has not started the update a minute later, or refuses or fails it, it stops
// QEMU rather than wait for the boot's timeout. *errp is the rollout's or the watch's error.
func (f *fleetServer) rolloutAfterReport(t *testing.T, name, version string, errp *error) func(ctx context.Context, con *console, stop func()) {
	return f.rolloutAfter(t, name, version, errp, func(ctx context.Context, con *console) bool { return con.await(ctx, "E2E-END") })
}

// rolloutAfter is rolloutAfterReport with another condition: ready, which returns false when
// the rollout must not happen (the boot's checks say why).
func (f *fleetServer) rolloutAfter(t *testing.T, name, version string, errp *error, ready func(ctx context.Context, con *console) bool) func(ctx context.Context, con *console, stop func()) {
	return func(ctx context.Context, con *console, stop func()) {
		if !ready(ctx, con) {
			return
		}
		fail := func(err error) {
			if ctx.Err() == nil {
				*errp = err
				t.Logf("%s: %v: stopping QEMU", name, err)
				stop()
			}
		}
		if err := f.rollout(ctx, version); err != nil {
			fail(fmt.Errorf("rolling out release %s: %w", version, err))
			return
		}
		t.Logf("%s [%.0fs]: release %s rolled out", name, time.Since(con.start).Seconds(), version)
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := f.awaitUpdate(sctx, version, api.UpdateDownloading, api.UpdateRebooting)
		cancel()
		if err != nil {
			fail(err)
			return
		}
		t.Logf("%s [%.0fs]: the device is taking release %s", name, time.Since(con.start).Seconds(), version)
		if _, err := f.awaitUpdate(ctx, version, api.UpdateRebooting); err != nil {
			fail(err)
			return
		}
		t.Logf("%s [%.0fs]: the device wrote release %s and is rebooting into its trial", name, time.Since(con.start).Seconds(), version)
	}
}

// checkUpdateState checks the agent's update state on the card's data partition after run r,
// and returns it.
func checkUpdateState(t *testing.T, r *bootRun, version, phase string, withReason bool) *ota.State {
	t.Helper()
	s, raw, err := readState(r.card.img, r.card.data)
	if err != nil || s == nil {
		r.con.fail(t, "the agent's update state on /var: %v (%q)", err, raw)
		return nil
	}
	t.Logf("%s: %s", ota.StateFile, strings.Join(strings.Fields(raw), " "))
	if s.Version != version || s.Phase != phase || (s.Reason != "") != withReason {
		r.con.fail(t, "the update state is version %q phase %q reason %q, want %s %s (with a reason: %v)", s.Version, s.Phase, s.Reason, version, phase, withReason)
	}
	return s
}

// checkDefault checks autoboot.txt's default boot partition.
func (h *harness) checkDefault(t *testing.T, c *card, want partition, why string) {
	t.Helper()
	if def, _, ok := rpi4.ParseAutoboot(h.readAutoboot(c)); !ok || def != want.Number {
		t.Errorf("autoboot.txt's default is partition %d (ok %v) %s, want %d", def, ok, why, want.Number)
	}
}

// update is the OTA part of TestBoot. Boot2 took release 2 into slot B and asked for a trial
// boot. The harness, as the firmware, boots slot B on trial (boot3): the agent commits release
// 2, and in the same boot, once the fleet has seen the commit, release 3 is rolled out: the
// device writes slot A (no longer a fallback once slot B is committed) and asks for its trial
// (boot4). Release 3 trusts another fleet CA, so its health check cannot pass: after the health
// timeout the agent restarts normally, and the firmware boots the default, slot B (boot5),
// where the device reports the failed update and powers off.
func (h *harness) update(c *card, fl *fleetServer, r2 *bootRun, deviceID string, v2, v3 built) {
	t := h.t

	h.phase("the firmware's part after boot2: the trial boot the device asked for")
	sb, _ := c.slot(c.bootB.Number)
	t.Run("release 2 written to slot B, trial armed", func(t *testing.T) { h.checkArmed(t, r2, "2", sb, v2) })
	c.holds["b"] = "2"
	r3 := h.prepare(c, "boot3", parseShutdown(r2.con.text()), modeUpdate)
	if r3.fb != (firmwareBoot{Partition: c.bootB.Number, Tryboot: true}) {
		t.Fatalf("after boot2 the firmware boots %v, want the trial of boot B (partition %d): no update to test", r3.fb, c.bootB.Number)
	}
	committedB := r3.sysSHA // system B as release 2 runs it (boot3 leaves it unchanged: checked)

	h.phase("push release 3 to the fleet")
	fl.pushRelease(t, v3.update, "3")

	h.phase("boot3: trial boot of slot B (release 2): health check, commit; then release 3 rolled out: download to slot A, trial armed, reboot")
	var commitAt time.Duration
	var commitErr, rollout3 error
	h.boot(r3, fl.rolloutAfter(t, "boot3", "3", &rollout3, func(ctx context.Context, con *console) bool {
		if _, commitErr = fl.awaitUpdate(ctx, "2", api.UpdateCommitted); commitErr != nil {
			return false
		}
		commitAt = time.Since(con.start)
		t.Logf("boot3 [%.0fs]: the fleet shows release 2 committed", commitAt.Seconds())
		return true
	}))
	t.Run("trial boot of release 2 in slot B", func(t *testing.T) {
		h.checkBoot(t, r3, shutdown{End: endRestart, Command: "0 tryboot"})
		con := r3.con
		fl.checkFleet(t, con, fleetWant{id: deviceID, version: "2", slot: "b"})
		t.Run("the agent commits release 2, the fleet shows it", func(t *testing.T) {
			if commitErr != nil || commitAt == 0 {
				con.fail(t, "the fleet did not see release 2 committed: %v (server log: %s)", commitErr, fl.log.Name())
				return
			}
			t.Logf("the fleet saw the commit %.0fs after QEMU started", commitAt.Seconds())
		})
		t.Run("autoboot.txt's default is boot B", func(t *testing.T) { h.checkDefault(t, c, c.bootB, "after the commit") })
		t.Run("the rollout of release 2 completed", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := fl.awaitRollout(ctx, "2", api.RolloutCompleted)
			if err != nil {
				t.Errorf("%v", err)
				return
			}
			if st.Committed != 1 || st.Failed != 0 {
				t.Errorf("rollout of 2: %d committed, %d failed; want 1 and 0", st.Committed, st.Failed)
			}
		})
		t.Run("the device took release 3 in the same boot", func(t *testing.T) {
			if rollout3 != nil {
				con.fail(t, "%v (server log: %s)", rollout3, fl.log.Name())
			}
		})
	})
	if rollout3 != nil {
		t.Fatalf("no update to release 3: %v", rollout3)
	}

	h.phase("the firmware's part after boot3: the trial boot the device asked for")
	sa, _ := c.slot(c.bootA.Number)
	t.Run("release 3 written to slot A, trial armed", func(t *testing.T) { h.checkArmed(t, r3, "3", sa, v3) })
	c.holds["a"] = "3"
	r4 := h.prepare(c, "boot4", parseShutdown(r3.con.text()), modeUpdate)
	if r4.fb != (firmwareBoot{Partition: c.bootA.Number, Tryboot: true}) {
		t.Fatalf("after boot3 the firmware boots %v, want the trial of boot A (partition %d)", r4.fb, c.bootA.Number)
	}

	h.phase("boot4: trial boot of slot A (release 3): its fleet unreachable, the health check times out, the agent restarts")
	h.boot(r4, nil)
	t.Run("trial boot of release 3 in slot A fails", func(t *testing.T) {
		h.checkBoot(t, r4, shutdown{End: endRestart})
		con := r4.con
		t.Run("the fleet hears nothing from release 3 (it trusts another CA)", func(t *testing.T) {
			d, err := fl.theDevice(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if n := heartbeatsSince(d, con.start); n != 0 {
				con.fail(t, "%d heartbeats arrived during the trial of release 3, which trusts another fleet CA: the broken release is not broken", n)
			}
		})
		t.Run("the trial lasts the health timeout", func(t *testing.T) {
			// The agent gives up after ota.healthTimeout, not before.
			d, _ := time.ParseDuration(healthTimeout)
			if ran, ok := con.mark("reboot: Restarting system"); !ok || ran < d {
				con.fail(t, "the restart came %.0fs after QEMU started (seen: %v), before the health timeout %s", ran.Seconds(), ok, healthTimeout)
			}
		})
		t.Run("update state: 3 failed", func(t *testing.T) { checkUpdateState(t, r4, "3", api.UpdateFailed, true) })
		t.Run("autoboot.txt's default is still boot B", func(t *testing.T) { h.checkDefault(t, c, c.bootB, "after the failed trial") })
	})

	h.phase("the firmware's part after boot4")
	r5 := h.prepare(c, "boot5", parseShutdown(r4.con.text()), modeReport)
	if r5.fb != (firmwareBoot{Partition: c.bootB.Number}) {
		t.Fatalf("after boot4 the firmware boots %v, want boot B (partition %d), the default", r5.fb, c.bootB.Number)
	}

	h.phase("boot5: slot B (release 2) again: the device reports the failed update and powers off")
	h.boot(r5, nil)
	t.Run("back on release 2 in slot B", func(t *testing.T) {
		h.checkBoot(t, r5, shutdown{End: endPowerOff})
		con := r5.con
		fl.checkFleet(t, con, fleetWant{id: deviceID, version: "2", slot: "b"})
		t.Run("the fleet shows the update to 3 failed, with its reason", func(t *testing.T) {
			d, err := fl.theDevice(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			u := updateOf(d)
			if u == nil || u.Version != "3" || u.State != api.UpdateFailed || u.Reason == "" {
				con.fail(t, "the device's last update status is %+v, want version 3 %s with a reason", u, api.UpdateFailed)
				return
			}
			t.Logf("update to 3: %s, reason %q, detail %q", u.State, u.Reason, u.Detail)
		})
		t.Run("the rollout of release 3 halted", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := fl.awaitRollout(ctx, "3", api.RolloutHalted)
			if err != nil {
				t.Errorf("%v", err)
				return
			}
			t.Logf("rollout of 3: %s (%s), %d failed %+v", st.State, st.Reason, st.Failed, st.Failures)
			if st.Failed != 1 {
				t.Errorf("rollout of 3: %d failed, want 1", st.Failed)
			}
		})
		t.Run("update state: 3 failed, the K3s snapshot restored and dropped", func(t *testing.T) {
			// The snapshot of K3s's state taken before the trial is put back on the old slot
			// and removed.
			if s := checkUpdateState(t, r5, "3", api.UpdateFailed, true); s != nil && s.Snapshot {
				con.fail(t, "the update state still has a K3s snapshot after the return to release 2")
			}
			if !strings.Contains(con.text(), "K3s state restored") {
				con.fail(t, "the agent's journal (E2E-SECTION agent) does not say \"update failed: K3s state restored\"")
			}
		})
		t.Run("system B's bytes unchanged since release 2 ran", func(t *testing.T) {
			// r5.sysSHA was taken before boot5 (which left it unchanged: checked above).
			if r5.sysSHA != committedB {
				t.Errorf("system B's sha256 is %s after release 3's trial, %s when release 2 ran: slot B was written", r5.sysSHA, committedB)
			}
		})
	})
}
