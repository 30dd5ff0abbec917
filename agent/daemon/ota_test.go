package daemon

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/k3s/k3stest"
	"github.com/edgeimg/edgeimg/agent/ota"
	"github.com/edgeimg/edgeimg/fleet"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/hw/filecard"
	"github.com/edgeimg/edgeimg/ota/apply"
	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/otatest"
)

// otaEnv is a real fleet holding release 2 and a device whose simulated card runs release 1
// on slot A.
type otaEnv struct {
	f      *fleetEnv
	p      device.Paths
	cfgDir string // the config partition's directory (device.yaml)
	card   *filecard.Card
	bundle []byte
	keys   bundle.Keyring
	boot2  []byte
	sys2   []byte
	r      *k3stest.Recorder
	logs   logBuf
}

func newOTAEnv(t *testing.T) *otaEnv {
	sk, pk := otatest.Key(t, 7)
	e := &otaEnv{keys: bundle.NewKeyring(pk), r: &k3stest.Recorder{}}
	e.f = newFleet(t, fleet.WithReleaseDir(t.TempDir()), fleet.WithTrustedKeys(e.keys))
	e.p, e.cfgDir = newDevice(t, e.f, e.f.newToken(1, nil))

	// The card: slot A holds release 1.
	e.card = otatest.NewCard(t)

	// Release 2: a new boot partition, release 1's system with a change in the middle.
	_, e.sys2 = otatest.SlotA()
	copy(e.sys2[otatest.MiB:], otatest.RandBytes(9, 200<<10))
	e.boot2 = otatest.FakeFAT(5, 150<<10, otatest.CmdOff)
	e.bundle = otatest.Release{Manifest: otatest.Manifest("2"), Boot: e.boot2, CmdOff: otatest.CmdOff, System: e.sys2}.Bundle(t, sk)
	return e
}

// config is the agent's configuration on a boot of the card's slot running version.
func (e *otaEnv) config(version, slot string) Config {
	cfg := testConfig(e.p, e.cfgDir, e.r, &e.logs)
	cfg.Version, cfg.Slot = version, slot
	cfg.OTA = &ota.Config{
		Switch:    e.card.Switch(),
		Card:      apply.CardFunc(func(n int) (apply.Partition, error) { return e.card.Partition(n) }),
		Keys:      e.keys,
		Installed: apply.Installed{Board: "rpi4", LayoutVersion: 1, Version: version},
		// The simulated Pi has a tryboot-capable EEPROM; K3s is not running here.
		Bootloader: func() error { return nil },
		Health:     func(context.Context) error { return nil },
	}
	return cfg
}

// rollOut boots slot A, pushes release 2 and rolls it out; it returns once the agent has
// armed the trial and rebooted, and the fleet has heard so.
func (e *otaEnv) rollOut(t *testing.T) {
	ctx := context.Background()
	stop := runAgent(e.config("1", "a"))
	waitFor(t, "a heartbeat", func() bool { d := e.f.device(id); return d != nil && len(d.Heartbeats) > 0 })
	if _, err := e.f.admin.PushRelease(ctx, bytes.NewReader(e.bundle), int64(len(e.bundle))); err != nil {
		t.Fatal(err)
	}
	if _, err := e.f.admin.Rollout(ctx, "2", api.RolloutRequest{Waves: []float64{100}, MaxFailures: 0}); err != nil {
		t.Fatal(err)
	}
	flag := filepath.Join(e.card.Dir, "tryboot-flag")
	waitFor(t, "the trial reboot", func() bool { _, err := os.Stat(flag); return err == nil })
	waitFor(t, "the rebooting status at the fleet", func() bool { return e.state() == api.UpdateRebooting })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// state is the update state the fleet last heard from the device.
func (e *otaEnv) state() string {
	d := e.f.device(id)
	if d == nil || d.Device.Update == nil {
		return ""
	}
	return d.Device.Update.State
}

// TestOTA: a real fleet rolls release 2 out; the agent on slot A downloads it (the chunks its
// card lacks) over mTLS, arms and reboots into the trial; the agent on the trial boot reaches
// the fleet and commits; the fleet sees the device committed.
func TestOTA(t *testing.T) {
	e := newOTAEnv(t)
	e.rollOut(t)
	st := e.f.device(id).Device.Update
	total := int64(len(e.boot2) + len(e.sys2))
	if st.Version != "2" || st.Total != total || st.Reused < otatest.MiB || st.Downloaded+st.Reused != total {
		t.Fatalf("update status %+v (parts %d bytes)", st, total)
	}

	// Boot 2: the trial of slot B.
	slot, err := e.card.PowerOn()
	if err != nil || slot.Name != "b" {
		t.Fatalf("trial boot: %v %v", slot, err)
	}
	stop := runAgent(e.config("2", "b"))
	waitFor(t, "the commit at the fleet", func() bool {
		return e.state() == api.UpdateCommitted && e.f.device(id).Device.Version == "2"
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if slot, err := e.card.PowerOn(); err != nil || slot.Name != "b" {
		t.Fatalf("boot after the commit: %v %v", slot, err)
	}
	ro, err := e.f.admin.RolloutStatus(context.Background(), "2")
	must(t, err)
	if ro.Committed != 1 || ro.Failed != 0 {
		t.Fatalf("rollout %+v", ro)
	}
	if slices.Contains(e.r.Calls(), "reboot ") {
		t.Fatal("a plain reboot during a good update")
	}
}

// TestOTAFleetUnreachable: release 2 cannot reach the fleet on its trial boot (here: the
// fleet is down), so the trial fails its health check; the agent reboots without tryboot,
// the card boots release 1, whose agent restores the K3s state and reports the failure.
func TestOTAFleetUnreachable(t *testing.T) {
	e := newOTAEnv(t)
	e.rollOut(t)
	e.f.stop()
	if slot, err := e.card.PowerOn(); err != nil || slot.Name != "b" {
		t.Fatalf("trial boot: %v %v", slot, err)
	}
	cfg := e.config("2", "b")
	cfg.OTA.HealthTimeout = 200 * time.Millisecond
	stop := runAgent(cfg)
	waitFor(t, "the plain reboot", func() bool { return slices.Contains(e.r.Calls(), "reboot ") })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.f.start()
	if slot, err := e.card.PowerOn(); err != nil || slot.Name != "a" {
		t.Fatalf("boot after the failed trial: %v %v", slot, err)
	}
	stop = runAgent(e.config("1", "a"))
	waitFor(t, "the failure at the fleet", func() bool { return e.state() == api.UpdateFailed })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	st := e.f.device(id).Device.Update
	if st.Version != "2" || st.Reason != ota.ReasonHealthTimeout {
		t.Fatalf("update status %+v", st)
	}
	if ota.HasSnapshot(e.p) {
		t.Fatal("the K3s snapshot is left after the restore")
	}
	if s, _ := ota.LoadState(e.p); s == nil || s.Phase != api.UpdateFailed || s.Snapshot {
		t.Fatalf("state %+v", s)
	}
}
