package ota

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/ota/otatest"
)

// TestPowerCut interrupts the whole update, from the download to the commit, at 100 random
// points: while downloading (the fleet's stream or chunks stop), while writing the inactive
// slot (the card's writes stop after a random number of bytes), at any write of state.json,
// before and after the tryboot flag is set, during the trial boot's health checks, and in the
// middle of the commit's autoboot.txt sector (a torn write: its first bytes new, the rest
// old). After each cut the simulated Pi is powered on again and the agent (a fresh updater,
// as after a reboot) carries on until the update has ended. Every boot must boot the old
// release, the new one on its trial, or the new committed one, never a broken slot; slot A's
// bytes never change; the update ends committed, or failed with the K3s state restored.
func TestPowerCut(t *testing.T) {
	sk, pk := otatest.Key(t, 1)
	rel := newRelease("2")
	b := rel.Bundle(t, sk)

	// An uncut run measures how many events of each kind an update has.
	used := map[string]int64{}
	for _, withIndex := range []bool{false, true} {
		s := newSim(t, pk)
		s.src = newSource(t, "2", b, withIndex)
		s.pw = &power{kind: "none"}
		if out := runToEnd(t, s, rel, "no cut"); out != api.UpdateCommitted {
			t.Fatalf("uncut run: %s", out)
		}
		for k, n := range s.pw.used {
			if withIndex && k == "download" {
				k = "download-delta"
			}
			used[k] = max(used[k], n)
		}
	}
	t.Logf("events of an update: %v", used)
	for _, k := range []string{"download", "download-delta", "card", "state", "tryboot", "tryboot-after", "trial", "autoboot"} {
		if used[k] == 0 {
			t.Fatalf("an update has no %s events", k)
		}
	}
	if used["autoboot"] != 512 {
		t.Fatalf("the commit wrote %d bytes of autoboot.txt, not one sector", used["autoboot"])
	}

	kinds := []string{"download", "download", "card", "card", "card", "state", "tryboot", "tryboot-after", "trial", "autoboot", "autoboot"}
	r := rand.New(rand.NewPCG(2026, 11))
	outcomes := map[string]int{}
	for i := range 100 {
		kind := kinds[r.IntN(len(kinds))]
		withIndex := r.IntN(2) == 0
		budget := used[kind]
		if kind == "download" && withIndex {
			budget = used["download-delta"]
		}
		left := r.Int64N(budget)
		name := fmt.Sprintf("cut %d: %s after %d of %d (delta %v)", i, kind, left, budget, withIndex)

		s := newSim(t, pk)
		s.src = newSource(t, "2", b, withIndex)
		pw := &power{kind: kind, left: left}
		s.pw = pw
		out := runToEnd(t, s, rel, name)
		if !pw.isDead() {
			t.Fatalf("%s: the power was never cut", name)
		}
		switch kind {
		case "download", "card", "tryboot", "tryboot-after":
			// Until the state says rebooting, a cut only delays the update; a cut between
			// arming the trial and the reboot into it too (the trial is tried once more).
			if out != api.UpdateCommitted {
				t.Fatalf("%s: the update ended %s, want committed", name, out)
			}
		}
		outcomes[kind+" → "+out]++
	}
	var keys []string
	for k := range outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%3d × %s", outcomes[k], k)
	}
}

// runToEnd boots the simulated device again and again, running the agent's updater on
// each boot, until the update has ended; it checks the invariants on every boot and
// returns the update's final state (committed or failed).
func runToEnd(t *testing.T, s *sim, rel otatest.Release, name string) string {
	t.Helper()
	a2, a5 := s.partSum(2), s.partSum(5)
	var trace []string
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s: %s\nboots: %v\nstate: %s", name, fmt.Sprintf(format, args...), trace, stateJSON(t, s.paths()))
	}
	for boot := 0; ; boot++ {
		if boot == 10 {
			fail("no end after %d boots", boot)
		}
		slot, trial := s.powerOn() // fails the test on an unbootable slot
		trace = append(trace, fmt.Sprintf("%s/trial=%v", slot.Name, trial))
		if s.partSum(2) != a2 || s.partSum(5) != a5 {
			fail("slot A's bytes changed")
		}
		if slot.Name == "b" {
			// Slot B boots only complete: on its trial, or once committed.
			if !trial && s.defaultSlot() != 3 {
				fail("slot B booted without a trial and without being the default")
			}
			if !bytes.Equal(s.partBytes(6, len(rel.System)), rel.System) || !bytes.Equal(s.partBytes(3, len(rel.Boot)), wantBootB(rel)) {
				fail("slot B boots with an incomplete release")
			}
		}
		cut := s.pw.isDead()
		u, rebooted := s.agent(slot, trial, "2")
		if s.pw.isDead() && !cut {
			s.pw = nil // the power comes back; the cut was this boot's end
			continue
		}
		if rebooted {
			continue
		}
		st := u.Status()
		if st == nil {
			fail("no update")
		}
		switch st.State {
		case api.UpdateCommitted:
			if slot.Name != "b" || s.defaultSlot() != 3 {
				fail("committed, but running %s (trial %v), default partition %d", slot.Name, trial, s.defaultSlot())
			}
			if s.hasSnapshot() || s.readK3s() != "k3s state migrated by release 2" {
				fail("committed: snapshot left %v, K3s state %q", s.hasSnapshot(), s.readK3s())
			}
		case api.UpdateFailed:
			if slot.Name != "a" || trial || s.defaultSlot() != 2 {
				fail("failed, but running %s (trial %v), default partition %d", slot.Name, trial, s.defaultSlot())
			}
			if !slices.Contains([]string{ReasonNoTrial, ReasonHealthTimeout}, st.Reason) {
				fail("failed with reason %q", st.Reason)
			}
			if s.hasSnapshot() || s.readK3s() != "k3s state of release 1" {
				fail("failed: snapshot left %v, K3s state %q", s.hasSnapshot(), s.readK3s())
			}
		default:
			fail("the update stopped in state %s: %+v", st.State, st)
		}
		// One more boot: the same slot, by default, and nothing to do.
		again, tr := s.powerOn()
		if again.Name != slot.Name || tr {
			fail("the next boot is %s (trial %v)", again.Name, tr)
		}
		if u, rebooted := s.agent(again, tr, "2"); rebooted || u.Status().State != st.State {
			fail("the next boot changes the update: rebooted %v, %+v", rebooted, u.Status())
		}
		return st.State
	}
}
