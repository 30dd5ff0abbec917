package store_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/store"
	"github.com/edgeimg/edgeimg/fleet/store/storetest"
)

func TestUpdateStatus(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s store.Store) {
		mkToken(t, s, "tok", 1, time.Hour, nil)
		if _, err := s.Enroll(ctx, enr("d1", "tok", "k1", t0)); err != nil {
			t.Fatal(err)
		}
		beat := func(at time.Duration, u *api.UpdateStatus) {
			t.Helper()
			if _, err := s.Heartbeat(ctx, "d1", "k1", api.Heartbeat{Version: "1", Update: u}, t0.Add(at)); err != nil {
				t.Fatal(err)
			}
		}
		beat(1, nil)
		beat(2, &api.UpdateStatus{Version: "2", State: api.UpdateDownloading, Downloaded: 10, Total: 100})
		beat(3, &api.UpdateStatus{Version: "2", State: api.UpdateDownloading, Downloaded: 50, Reused: 20, Total: 100}) // progress: no event
		d, err := s.Device(ctx, "d1")
		if err != nil {
			t.Fatal(err)
		}
		if u := d.Update; u == nil || u.State != api.UpdateDownloading || u.Downloaded != 50 || u.Reused != 20 || !d.UpdateAt.Equal(t0.Add(2)) {
			t.Fatalf("update status: %+v at %v", d.Update, d.UpdateAt)
		}
		beat(4, &api.UpdateStatus{Version: "2", State: api.UpdateRefused, Reason: "bad signature", Detail: "key abc"})
		beat(5, &api.UpdateStatus{Version: "2", State: api.UpdateRefused, Reason: "bad signature", Detail: "key abc"})
		beat(6, nil) // no status: the last one stays
		d, _ = s.Device(ctx, "d1")
		if u := d.Update; u == nil || u.State != api.UpdateRefused || u.Reason != "bad signature" || u.Downloaded != 0 || !d.UpdateAt.Equal(t0.Add(4)) {
			t.Fatalf("update status: %+v at %v", d.Update, d.UpdateAt)
		}
		evs, _ := s.Events(ctx, "d1", 10)
		var got []string
		for _, e := range evs[:len(evs)-1] { // the last is the enrollment
			got = append(got, e.Kind+": "+e.Detail)
		}
		want := "update-refused: release 2: bad signature: key abc|update-downloading: release 2"
		if strings.Join(got, "|") != want {
			t.Errorf("events:\n%s\nwant\n%s", strings.Join(got, "|"), want)
		}
	})
}

func TestRolloutRules(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s store.Store) {
		mkToken(t, s, "tok", 200, time.Hour, nil)
		const n = 100
		for i := range n {
			if _, err := s.Enroll(ctx, enr(fmt.Sprintf("d%03d", i), "tok", fmt.Sprintf("k%d", i), t0)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Revoke(ctx, "d099", t0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.StartRollout(ctx, "2", api.RolloutRequest{Waves: []float64{100}}, t0); !strings.Contains(fmt.Sprint(err), "push it first") {
			t.Fatalf("rollout of an unrecorded release: %v", err)
		}
		info := api.ReleaseInfo{Version: "2", SHA256: strings.Repeat("a", 64), PushedAt: t0}
		if err := s.PutRelease(ctx, info); err != nil {
			t.Fatal(err)
		}
		if err := s.PutRelease(ctx, info); err != nil {
			t.Fatalf("same release again: %v", err)
		}
		info.SHA256 = strings.Repeat("b", 64)
		if err := s.PutRelease(ctx, info); err == nil {
			t.Fatal("another release with the same version was recorded")
		}
		// 99 active devices; waves 3% and 100%: ceil(2.97) = 3 devices first.
		ro, err := s.StartRollout(ctx, "2", api.RolloutRequest{Waves: []float64{3, 100}, MaxFailures: 2}, t0)
		if err != nil {
			t.Fatal(err)
		}
		if ro.Selected != 99 || ro.Targeted != 3 || ro.Pending != 3 {
			t.Fatalf("start: %+v", ro)
		}
		var first []string
		devs, _ := s.Devices(ctx, store.DeviceFilter{})
		for _, d := range devs {
			if d.DesiredVer == "2" {
				first = append(first, d.ID)
			}
		}
		report := func(id, state string) {
			t.Helper()
			if _, err := s.Heartbeat(ctx, id, "k"+strings.TrimLeft(id[1:], "0"), api.Heartbeat{Version: "1", Update: &api.UpdateStatus{Version: "2", State: state, Reason: "r"}}, t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		// 1 failure of 3 targeted: limit floor(3 × 2%) = 0, so it halts.
		report(first[0], api.UpdateFailed)
		report(first[1], api.UpdateCommitted)
		if n, err := s.AdvanceRollouts(ctx, t0.Add(time.Minute)); err != nil || n != 1 {
			t.Fatalf("advance: %d %v", n, err)
		}
		if ro, _ := s.Rollout(ctx, "2"); ro.State != api.RolloutHalted || ro.Failed != 1 || ro.Pending != 1 {
			t.Fatalf("after a failure in a small wave: %+v", ro)
		}
		if _, err := s.StartRollout(ctx, "2", api.RolloutRequest{Waves: []float64{100}}, t0); err == nil {
			t.Fatal("a rollout started while another is halted")
		}
		if _, err := s.RolloutAction(ctx, "2", "resume", t0.Add(2*time.Minute)); err != nil {
			t.Fatal(err)
		}
		report(first[2], api.UpdateRefused)
		// 2 failures of 3, one more than acknowledged: halts again.
		s.AdvanceRollouts(ctx, t0.Add(3*time.Minute))
		if ro, _ := s.Rollout(ctx, "2"); ro.State != api.RolloutHalted || ro.Failed != 2 || ro.Failures[0].Reason != "r" {
			t.Fatalf("after a new failure: %+v", ro)
		}
		if _, err := s.RolloutAction(ctx, "2", "resume", t0.Add(4*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.AdvanceRollouts(ctx, t0.Add(5*time.Minute)); n != 1 {
			t.Fatal("the resumed rollout did not move on")
		}
		// Second wave: 99 targeted, limit floor(99 × 2%) = 1 < 2 failures, above the 2
		// acknowledged: one more failure halts.
		ro, _ = s.Rollout(ctx, "2")
		if ro.Wave != 1 || ro.Targeted != 99 || ro.Pending != 96 {
			t.Fatalf("second wave: %+v", ro)
		}
		if n, _ := s.AdvanceRollouts(ctx, t0.Add(6*time.Minute)); n != 0 {
			t.Fatalf("advanced with pending devices: %d", n)
		}
		if _, err := s.RolloutAction(ctx, "2", "resume", t0); err == nil {
			t.Fatal("resumed a running rollout")
		}
		if ro, err := s.RolloutAction(ctx, "2", "abort", t0.Add(7*time.Minute)); err != nil || ro.State != api.RolloutAborted {
			t.Fatalf("abort: %+v %v", ro, err)
		}
		devs, _ = s.Devices(ctx, store.DeviceFilter{})
		for _, d := range devs {
			if d.DesiredVer != "" {
				t.Errorf("device %s still told %q after the abort", d.ID, d.DesiredVer)
			}
		}
		evs, err := s.RolloutEvents(ctx, "2", 20)
		if err != nil || len(evs) != 8 || evs[0].Kind != "abort" || evs[len(evs)-1].Kind != "started" {
			t.Errorf("rollout events: %+v %v", evs, err)
		}
	})
}
