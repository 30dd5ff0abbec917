package ota

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/otatest"
)

// wantBootB is slot B's boot partition after the update: release 2's with slot B's cmdline.
func wantBootB(rel otatest.Release) []byte {
	b := bytes.Clone(rel.Boot)
	copy(b[rel.CmdOff:], otatest.CmdB)
	return b
}

func TestUpdateCommits(t *testing.T) {
	for _, withIndex := range []bool{true, false} {
		name := map[bool]string{true: "delta", false: "full"}[withIndex]
		t.Run(name, func(t *testing.T) {
			sk, pk := otatest.Key(t, 1)
			rel := newRelease("2")
			s := newSim(t, pk)
			s.src = newSource(t, "2", rel.Bundle(t, sk), withIndex)
			a2, a5 := s.partSum(2), s.partSum(5)

			// Boot 1: slot A, the fleet wants release 2: download, snapshot, trial reboot.
			slot, trial := s.powerOn()
			if slot.Name != "a" || trial {
				t.Fatalf("first boot: %v trial %v", slot, trial)
			}
			u, rebooted := s.agent(slot, trial, "2")
			st := u.Status()
			if !rebooted || st == nil || st.State != api.UpdateRebooting || st.Version != "2" {
				t.Fatalf("after the download: rebooted %v, status %+v", rebooted, st)
			}
			total := int64(len(rel.Boot) + len(rel.System))
			if st.Total != total || st.Downloaded+st.Reused < total/2 {
				t.Fatalf("status %+v: total %d", st, total)
			}
			if withIndex {
				// Most of the system part is on slot A: only the changed chunks are fetched.
				if st.Reused < 1<<20 || st.Downloaded != s.src.chunkBytes.Load() || st.Downloaded+st.Reused != total || s.src.bundleBytes.Load() != 0 {
					t.Fatalf("delta download: status %+v, fetched %d chunk bytes, %d bundle bytes of %d", st, s.src.chunkBytes.Load(), s.src.bundleBytes.Load(), total)
				}
			} else if s.src.bundleBytes.Load() != int64(len(s.src.bundle)) || st.Downloaded != int64(len(s.src.bundle)) {
				t.Fatalf("full download: %d of %d bytes, status %+v", s.src.bundleBytes.Load(), len(s.src.bundle), st)
			}
			if len(s.reports) != 1 || s.reports[0].State != api.UpdateRebooting {
				t.Fatalf("reports before the reboot: %+v", s.reports)
			}
			if s.snapshots != 1 || !s.hasSnapshot() {
				t.Fatal("no K3s snapshot before the reboot")
			}

			// Boot 2: the trial of slot B; the fleet answers, K3s is healthy: commit.
			slot, trial = s.powerOn()
			if slot.Name != "b" || !trial {
				t.Fatalf("second boot: %v trial %v", slot, trial)
			}
			if got := s.partBytes(6, len(rel.System)); !bytes.Equal(got, rel.System) {
				t.Fatal("slot B's system is not release 2's")
			}
			if got := s.partBytes(3, len(rel.Boot)); !bytes.Equal(got, wantBootB(rel)) {
				t.Fatal("slot B's boot partition is not release 2's with slot B's cmdline.txt")
			}
			u, rebooted = s.agent(slot, trial, "2")
			if st := u.Status(); rebooted || st.State != api.UpdateCommitted || st.Version != "2" {
				t.Fatalf("trial: rebooted %v, status %+v", rebooted, st)
			}
			if s.defaultSlot() != 3 || s.hasSnapshot() {
				t.Fatalf("after the commit: default partition %d, snapshot left %v", s.defaultSlot(), s.hasSnapshot())
			}

			// Boot 3: slot B by default; nothing more to do.
			slot, trial = s.powerOn()
			if slot.Name != "b" || trial {
				t.Fatalf("third boot: %v trial %v", slot, trial)
			}
			calls := s.src.manifestCalls.Load()
			u, rebooted = s.agent(slot, trial, "2")
			if st := u.Status(); rebooted || st.State != api.UpdateCommitted || s.src.manifestCalls.Load() != calls {
				t.Fatalf("after the update: rebooted %v, status %+v", rebooted, st)
			}
			if s.readK3s() != "k3s state migrated by release 2" || s.restores != 0 {
				t.Fatal("the K3s state was restored after a committed update")
			}
			if s.partSum(2) != a2 || s.partSum(5) != a5 {
				t.Fatal("slot A changed")
			}
		})
	}
}

// TestUpdateResumes: network errors in the middle of the bundle are retried.
func TestUpdateResumes(t *testing.T) {
	sk, pk := otatest.Key(t, 1)
	rel := newRelease("2")
	s := newSim(t, pk)
	s.src = newSource(t, "2", rel.Bundle(t, sk), false)
	s.src.transientFails.Store(3)
	slot, trial := s.powerOn()
	u, rebooted := s.agent(slot, trial, "2")
	if st := u.Status(); !rebooted || st.State != api.UpdateRebooting {
		t.Fatalf("rebooted %v, status %+v", rebooted, st)
	}
	if s.src.transientFails.Load() != 0 {
		t.Fatal("the network errors did not happen")
	}
}

func TestUpdateHealthFails(t *testing.T) {
	sk, pk := otatest.Key(t, 1)
	rel := newRelease("2")
	s := newSim(t, pk)
	s.src = newSource(t, "2", rel.Bundle(t, sk), true)
	s.timeout = 20 * time.Millisecond
	s.health = func(context.Context) error { return errors.New("node edge-1 not Ready") }
	a2, a5 := s.partSum(2), s.partSum(5)

	slot, trial := s.powerOn()
	if _, rebooted := s.agent(slot, trial, "2"); !rebooted {
		t.Fatal("no trial reboot")
	}
	// The trial: K3s never gets healthy; the updater records the failure and reboots
	// without tryboot.
	slot, trial = s.powerOn()
	if slot.Name != "b" || !trial {
		t.Fatalf("trial boot: %v %v", slot, trial)
	}
	u, rebooted := s.agent(slot, trial, "2")
	st := u.Status()
	if !rebooted || !s.rebootAsked || st.State != api.UpdateFailed || st.Reason != ReasonHealthTimeout || !strings.Contains(st.Detail, "not Ready") {
		t.Fatalf("failed trial: rebooted %v, status %+v", rebooted, st)
	}
	if n := len(s.reports); n == 0 || s.reports[n-1].State != api.UpdateFailed {
		t.Fatalf("the failure was not reported before the reboot: %+v", s.reports)
	}
	// Back on slot A: the K3s state the trial changed is restored; the failure stays.
	slot, trial = s.powerOn()
	if slot.Name != "a" || trial {
		t.Fatalf("after the failed trial: %v %v", slot, trial)
	}
	calls := s.src.manifestCalls.Load()
	u, rebooted = s.agent(slot, trial, "2")
	st = u.Status()
	if rebooted || st.State != api.UpdateFailed || st.Reason != ReasonHealthTimeout || st.Version != "2" {
		t.Fatalf("after the failed trial: rebooted %v, status %+v", rebooted, st)
	}
	if s.readK3s() != "k3s state of release 1" || s.restores != 1 || s.hasSnapshot() {
		t.Fatalf("K3s state %q after %d restores (snapshot left: %v)", s.readK3s(), s.restores, s.hasSnapshot())
	}
	if s.src.manifestCalls.Load() != calls {
		t.Fatal("the failed release was tried again")
	}
	if s.defaultSlot() != 2 || s.partSum(2) != a2 || s.partSum(5) != a5 {
		t.Fatal("slot A is no longer the intact default")
	}
}

// TestTrialDoesNotComeUp: the new release never reaches the agent (it crashes, or the
// power goes during the trial); the firmware's next boot is the old slot.
func TestTrialDoesNotComeUp(t *testing.T) {
	sk, pk := otatest.Key(t, 1)
	rel := newRelease("2")
	s := newSim(t, pk)
	s.src = newSource(t, "2", rel.Bundle(t, sk), true)
	slot, trial := s.powerOn()
	if _, rebooted := s.agent(slot, trial, "2"); !rebooted {
		t.Fatal("no trial reboot")
	}
	if slot, trial = s.powerOn(); slot.Name != "b" || !trial {
		t.Fatalf("trial boot: %v %v", slot, trial)
	}
	s.writeK3s("k3s state half migrated")
	slot, trial = s.powerOn() // the agent never ran
	// The trial never started its health checks: it might be a lost reboot, so it is tried
	// once more.
	u, rebooted := s.agent(slot, trial, "2")
	if st := u.Status(); slot.Name != "a" || !rebooted || st.State != api.UpdateRebooting {
		t.Fatalf("on %v: rebooted %v, status %+v", slot, rebooted, st)
	}
	if s.readK3s() != "k3s state half migrated" {
		t.Fatalf("K3s state %q changed before the second try", s.readK3s())
	}
	if slot, trial = s.powerOn(); slot.Name != "b" || !trial {
		t.Fatalf("second trial boot: %v %v", slot, trial)
	}
	slot, trial = s.powerOn() // the agent never ran, again
	u, rebooted = s.agent(slot, trial, "2")
	st := u.Status()
	if slot.Name != "a" || rebooted || st.State != api.UpdateFailed || st.Reason != ReasonNoTrial {
		t.Fatalf("on %v: rebooted %v, status %+v", slot, rebooted, st)
	}
	if s.readK3s() != "k3s state of release 1" {
		t.Fatalf("K3s state %q not restored", s.readK3s())
	}
	// A different release is tried.
	rel3 := newRelease("3")
	s.src = newSource(t, "3", rel3.Bundle(t, sk), true)
	u, rebooted = s.agent(slot, trial, "3")
	if st := u.Status(); !rebooted || st.Version != "3" || st.State != api.UpdateRebooting {
		t.Fatalf("release 3: rebooted %v, status %+v", rebooted, st)
	}
}

// TestTrialRebootLost: the power goes after the update is armed, before the reboot into its
// trial: the next boot is the old slot, and the trial is tried again, then committed.
func TestTrialRebootLost(t *testing.T) {
	sk, pk := otatest.Key(t, 1)
	rel := newRelease("2")
	s := newSim(t, pk)
	s.src = newSource(t, "2", rel.Bundle(t, sk), true)
	s.pw = &power{kind: "tryboot", left: 0}
	slot, trial := s.powerOn()
	if _, rebooted := s.agent(slot, trial, "2"); rebooted || !s.pw.isDead() {
		t.Fatalf("rebooted %v, power cut %v", rebooted, s.pw.isDead())
	}
	s.pw = nil
	if slot, trial = s.powerOn(); slot.Name != "a" || trial {
		t.Fatalf("after the cut: %v %v", slot, trial)
	}
	if _, rebooted := s.agent(slot, trial, "2"); !rebooted {
		t.Fatal("the trial was not tried again")
	}
	if slot, trial = s.powerOn(); slot.Name != "b" || !trial {
		t.Fatalf("trial boot: %v %v", slot, trial)
	}
	u, _ := s.agent(slot, trial, "2")
	if st := u.Status(); st.State != api.UpdateCommitted || s.defaultSlot() != 3 {
		t.Fatalf("after the trial: %+v, default partition %d", st, s.defaultSlot())
	}
}

// resign signs manifest bytes with sk, as manifest.sig.
func resign(t *testing.T, mb []byte, sk ed25519.PrivateKey) []byte {
	sig, err := json.Marshal(bundle.Signature{KeyID: bundle.KeyID(sk.Public().(ed25519.PublicKey)), Signature: ed25519.Sign(sk, mb)})
	must(t, err)
	return sig
}

// TestRefusals: each rejected release is reported with its reason, never made bootable, and
// not tried again.
func TestRefusals(t *testing.T) {
	sk, pk := otatest.Key(t, 1)
	other, _ := otatest.Key(t, 2)
	cases := []struct {
		name   string
		reason bundle.Reason
		make   func(t *testing.T, s *sim)
	}{
		{"bad signature", bundle.ErrBadSignature, func(t *testing.T, s *sim) {
			s.src = newSource(t, "2", newRelease("2").Bundle(t, sk), true)
			s.src.manifest = bytes.Replace(s.src.manifest, []byte(`"demo"`), []byte(`"evil"`), 1)
		}},
		{"unknown key", bundle.ErrUnknownKey, func(t *testing.T, s *sim) {
			s.src = newSource(t, "2", newRelease("2").Bundle(t, other), true)
		}},
		{"truncated", bundle.ErrTruncated, func(t *testing.T, s *sim) {
			b := newRelease("2").Bundle(t, sk)
			s.src = newSource(t, "2", b[:len(b)-300000], false)
		}},
		{"hash mismatch", bundle.ErrHashMismatch, func(t *testing.T, s *sim) {
			b := newRelease("2").Bundle(t, sk)
			b[len(b)-100000] ^= 1
			s.src = newSource(t, "2", b, false)
		}},
		{"wrong board", bundle.ErrWrongBoard, func(t *testing.T, s *sim) {
			rel := newRelease("2")
			rel.Manifest.Board = "rpi5"
			s.src = newSource(t, "2", rel.Bundle(t, sk), true)
		}},
		{"layout", bundle.ErrLayout, func(t *testing.T, s *sim) {
			rel := newRelease("2")
			rel.Manifest.LayoutVersion = 2
			s.src = newSource(t, "2", rel.Bundle(t, sk), true)
		}},
		{"downgrade", bundle.ErrDowngrade, func(t *testing.T, s *sim) {
			s.src = newSource(t, "0.9", newRelease("0.9").Bundle(t, sk), true)
		}},
		{"bigger than the slot", bundle.ErrTooBig, func(t *testing.T, s *sim) {
			rel := newRelease("2")
			rel.System = otatest.RandBytes(3, 5*mib)
			s.src = newSource(t, "2", rel.Bundle(t, sk), false)
		}},
		{"manifest lies about sizes", bundle.ErrSizeMismatch, func(t *testing.T, s *sim) {
			rel := newRelease("2")
			var buf bytes.Buffer
			m, err := bundle.Write(&buf, rel.Manifest, sk, rel.Sources())
			must(t, err)
			m.Parts[1].Size -= 1000
			mb, err := m.Marshal()
			must(t, err)
			buf.Reset()
			must(t, bundle.WriteStream(&buf, mb, resign(t, mb, sk), rel.Sources()))
			s.src = newSource(t, "2", buf.Bytes(), false)
		}},
		{"bootloader", ErrBootloader, func(t *testing.T, s *sim) {
			s.src = newSource(t, "2", newRelease("2").Bundle(t, sk), true)
			s.boot = func() error { return errors.New("EEPROM from 2021-04-29") }
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSim(t, pk)
			c.make(t, s)
			autoboot, err := s.card.Autoboot()
			must(t, err)
			slot, trial := s.powerOn()
			u, rebooted := s.agent(slot, trial, s.src.version)
			st := u.Status()
			if rebooted || st == nil || st.State != api.UpdateRefused || st.Reason != string(c.reason) || st.Version != s.src.version {
				t.Fatalf("rebooted %v, status %+v", rebooted, st)
			}
			if err := st.Validate(); err != nil {
				t.Fatalf("status %+v: %v", st, err)
			}
			if after, _ := s.card.Autoboot(); !bytes.Equal(after, autoboot) {
				t.Fatal("autoboot.txt changed")
			}
			if b, _ := s.card.Switch().Inactive(); s.card.Bootable(b) {
				t.Fatal("the refused release's slot is bootable")
			}
			if s.hasSnapshot() {
				t.Fatal("K3s snapshot left behind")
			}
			// Not again, after a restart either.
			calls := s.src.manifestCalls.Load()
			slot, trial = s.powerOn()
			u, _ = s.agent(slot, trial, s.src.version)
			if s.src.manifestCalls.Load() != calls || u.Status().State != api.UpdateRefused {
				t.Fatalf("the refused release was tried again: %+v", u.Status())
			}
		})
	}
}

// TestResumeInPlace: after a power cut late in writing the slot, the next boot's download
// takes the chunks already written from the slot itself and fetches far less.
func TestResumeInPlace(t *testing.T) {
	sk, pk := otatest.Key(t, 1)
	rel := newRelease("2")
	b := rel.Bundle(t, sk)

	s := newSim(t, pk)
	s.src = newSource(t, "2", b, true)
	slot, trial := s.powerOn()
	s.agent(slot, trial, "2")
	full := s.src.chunkBytes.Load()

	s = newSim(t, pk)
	s.src = newSource(t, "2", b, true)
	s.pw = &power{kind: "card", left: int64(len(rel.Boot)+len(rel.System)) * 9 / 10}
	slot, trial = s.powerOn()
	s.agent(slot, trial, "2")
	if !s.pw.isDead() {
		t.Fatal("no power cut")
	}
	s.pw = nil
	s.src = newSource(t, "2", b, true)
	slot, trial = s.powerOn()
	u, rebooted := s.agent(slot, trial, "2")
	st := u.Status()
	if !rebooted || st.State != api.UpdateRebooting {
		t.Fatalf("after the cut: rebooted %v, %+v", rebooted, st)
	}
	again := s.src.chunkBytes.Load()
	t.Logf("fetched %d chunk bytes after the cut, %d for a whole delta download, parts %d bytes", again, full, st.Total)
	if again*2 > full || st.Downloaded != again {
		t.Fatalf("the resumed download fetched %d bytes, a whole one %d (status %+v)", again, full, st)
	}
}

// stallingSource serves a bundle whose stream stalls half way until the download's context
// ends.
type stallingSource struct {
	*fakeSource
	stalled chan string
}

func (s stallingSource) Bundle(ctx context.Context, version string) io.ReadCloser {
	return &stallReader{r: s.fakeSource.Bundle(ctx, version), ctx: ctx, left: len(s.bundle) / 2, stalled: s.stalled, version: version}
}

type stallReader struct {
	r       io.ReadCloser
	ctx     context.Context
	left    int
	stalled chan string
	version string
}

func (s *stallReader) Read(b []byte) (int, error) {
	if s.left <= 0 {
		s.stalled <- s.version
		<-s.ctx.Done()
		return 0, s.ctx.Err()
	}
	n, err := s.r.Read(b[:min(len(b), s.left)])
	s.left -= n
	return n, err
}

func (s *stallReader) Close() error { return s.r.Close() }

// TestDownloadCancel: a new target cancels the running download before its own starts, and
// shutting down cancels the download; neither leaves a bootable half slot.
func TestDownloadCancel(t *testing.T) {
	sk, pk := otatest.Key(t, 1)
	s := newSim(t, pk)
	s.noDelta = true
	src2 := stallingSource{newSource(t, "2", newRelease("2").Bundle(t, sk), false), make(chan string)}
	slot, _ := s.powerOn()
	u := s.updater(slot.Name)
	u.SetSource(src2)
	ctx, cancel := context.WithCancel(context.Background())
	must(t, u.Boot(ctx))
	u.Desire("2")
	if v := <-src2.stalled; v != "2" {
		t.Fatalf("stalled on %s", v)
	}
	if st := u.Status(); st.State != api.UpdateDownloading || st.Downloaded == 0 {
		t.Fatalf("while downloading: %+v", st)
	}
	// The fleet now wants release 3, which also stalls.
	src3 := stallingSource{newSource(t, "3", newRelease("3").Bundle(t, sk), false), src2.stalled}
	u.SetSource(src3)
	u.Desire("3")
	u.Desire("3") // once
	if v := <-src2.stalled; v != "3" {
		t.Fatalf("stalled on %s", v)
	}
	if st := u.Status(); st.Version != "3" || st.State != api.UpdateDownloading {
		t.Fatalf("after the new target: %+v", st)
	}
	cancel()
	u.Wait()
	if st := u.State(); st.Version != "3" || st.Phase != api.UpdateDownloading {
		t.Fatalf("after the shutdown: %+v", st)
	}
	if b, _ := s.card.Switch().Inactive(); s.card.Bootable(b) {
		t.Fatal("a cancelled download left a bootable slot")
	}
}
