package fleet_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/releases/releasetest"
	"github.com/edgeimg/edgeimg/fleet/store"
	"github.com/edgeimg/edgeimg/fleet/store/storetest"
	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/delta"
)

var signKey = releasetest.Key(7)

// newReleaseEnv is newEnv with a release store that trusts signKey.
func newReleaseEnv(t *testing.T, st store.Store, opts ...fleet.Option) *env {
	t.Helper()
	return newEnv(t, st, append([]fleet.Option{fleet.WithReleaseDir(filepath.Join(t.TempDir(), "releases")),
		fleet.WithTrustedKeys(releasetest.Keyring(signKey))}, opts...)...)
}

// do sends an admin request with the admin token; body is []byte (sent as is) or a value
// (JSON). It returns the status and the body.
func (e *env) do(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.adminToken(t))
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (e *env) push(t *testing.T, b []byte) (int, api.ReleaseInfo, api.Error) {
	t.Helper()
	status, body := e.do(t, "POST", "/v1/admin/releases", b)
	var info api.ReleaseInfo
	var ae api.Error
	if status == 200 {
		if err := json.Unmarshal(body, &info); err != nil {
			t.Fatal(err)
		}
	} else if err := json.Unmarshal(body, &ae); err != nil || ae.Code == "" {
		t.Fatalf("push: %d without a JSON error: %s", status, body)
	}
	return status, info, ae
}

// get fetches a device route with c and returns the status, body and headers.
func dget(t *testing.T, c *http.Client, url string, hdr map[string]string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func hexSum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func enrolled(t *testing.T, e *env, id, tok string) *dev {
	t.Helper()
	d := e.newDev(id)
	if status, ae, _ := d.enroll(t, tok); status != 200 {
		t.Fatalf("enroll %s: %d %+v", id, status, ae)
	}
	return d
}

func TestReleasePushAndServe(t *testing.T) {
	e := newReleaseEnv(t, storetest.Open(t, "sqlite"))
	d := enrolled(t, e, "dev-1", token(t, e, 1, time.Hour, nil))
	c := d.client(true)

	boot, sys := releasetest.Data(1, 200<<10), releasetest.Data(2, 3<<20)
	b1 := releasetest.Bundle(t, signKey, "2", boot, sys)
	status, info, ae := e.push(t, b1)
	if status != 200 || info.Version != "2" || info.SHA256 != hexSum(b1) || info.Size != int64(len(b1)) || info.NewBytes != int64(len(boot)+len(sys)) || info.KeyID != bundle.KeyID(signKey.Public().(ed25519.PublicKey)) {
		t.Fatalf("push: %d %+v %+v", status, info, ae)
	}
	if status, again, _ := e.push(t, b1); status != 200 || again != info {
		t.Errorf("re-push: %d %+v, want %+v", status, again, info)
	}
	if status, _, ae := e.push(t, releasetest.Bundle(t, signKey, "2", boot, releasetest.Data(3, 100<<10))); status != 409 || ae.Code != "conflict" {
		t.Errorf("conflicting push: %d %+v", status, ae)
	}
	if status, _, ae := e.push(t, releasetest.Bundle(t, releasetest.Key(8), "3", boot, sys)); status != 409 || !strings.Contains(ae.Error, string(bundle.ErrUnknownKey)) {
		t.Errorf("unknown key: %d %+v", status, ae)
	}
	bad := bytes.Clone(b1)
	bad[len(bad)-4096] ^= 0xff
	if status, _, ae := e.push(t, bad); status != 400 || !strings.Contains(ae.Error, string(bundle.ErrHashMismatch)) {
		t.Errorf("corrupt bundle: %d %+v", status, ae)
	}
	// Release 3 shares most bytes with 2.
	sys3 := bytes.Clone(sys)
	copy(sys3[1<<20:], "a few changed bytes")
	b3 := releasetest.Bundle(t, signKey, "3", boot, sys3)
	status, info3, ae := e.push(t, b3)
	if status != 200 || info3.NewBytes > 2*delta.MaxChunk || info3.NewBytes == 0 {
		t.Fatalf("push 3: %d %+v %+v", status, info3, ae)
	}
	t.Logf("release 3 added %d of %d bytes", info3.NewBytes, info3.PartsSize)
	// The admin client against the real routes: the same release again, then the list.
	if got, err := e.admin.PushRelease(ctx, bytes.NewReader(b3), int64(len(b3))); err != nil || *got != info3 {
		t.Errorf("client push: %+v %v", got, err)
	}
	if rels, err := e.admin.Releases(ctx); err != nil || len(rels) != 2 {
		t.Errorf("client releases: %+v %v", rels, err)
	}
	if rel, err := e.admin.Release(ctx, "2"); err != nil || *rel != info {
		t.Errorf("client release 2: %+v %v", rel, err)
	}
	if status, body := e.do(t, "GET", "/v1/admin/releases", nil); status != 200 || !strings.Contains(string(body), `"version":"3"`) || !strings.Contains(string(body), `"version":"2"`) {
		t.Errorf("list releases: %d %s", status, body)
	}

	// Device downloads.
	base := e.srv.URL + api.PathReleases + "3/"
	status, got, hdr := dget(t, c, base+"bundle", nil)
	if status != 200 || hexSum(got) != hexSum(b3) || hdr.Get("ETag") != `"`+info3.SHA256+`"` || !strings.Contains(hdr.Get("Cache-Control"), "immutable") {
		t.Fatalf("bundle: %d, sha256 %s want %s, headers %v", status, hexSum(got), hexSum(b3), hdr)
	}
	status, got, hdr = dget(t, c, base+"bundle", map[string]string{"Range": "bytes=1000-300000"})
	if status != 206 || !bytes.Equal(got, b3[1000:300001]) || hdr.Get("Content-Range") != fmt.Sprintf("bytes 1000-300000/%d", len(b3)) {
		t.Errorf("bundle range: %d %d bytes %v", status, len(got), hdr)
	}
	if status, _, _ := dget(t, c, base+"bundle", map[string]string{"If-None-Match": `"` + info3.SHA256 + `"`}); status != 304 {
		t.Errorf("bundle If-None-Match: %d", status)
	}
	_, mb, _ := dget(t, c, base+"manifest", nil)
	m, err := bundle.ParseManifest(mb)
	if err != nil || m.Version != "3" {
		t.Fatalf("manifest: %v %s", err, mb)
	}
	if status, sb, _ := dget(t, c, base+"signature", nil); status != 200 || !strings.Contains(string(sb), "key_id") && !strings.Contains(string(sb), "keyId") {
		t.Errorf("signature: %d %s", status, sb)
	}
	p := m.Part(bundle.PartSystem)
	_, ib, _ := dget(t, c, base+"index/system", nil)
	ix, err := delta.ParseIndex(ib, p.Name, p.Size, p.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	var part []byte
	for _, ch := range ix.Chunks {
		status, b, _ := dget(t, c, e.srv.URL+api.PathChunks+ch.SHA256, nil)
		if status != 200 || hexSum(b) != ch.SHA256 {
			t.Fatalf("chunk %s: %d", ch.SHA256, status)
		}
		part = append(part, b...)
	}
	if !bytes.Equal(part, sys3) {
		t.Error("the chunks do not make up the part")
	}
	for path, want := range map[string]int{base + "index/nope": 404, e.srv.URL + api.PathReleases + "9/manifest": 404, e.srv.URL + api.PathChunks + "../../etc": 404,
		e.srv.URL + api.PathChunks + strings.Repeat("0", 64): 404} {
		if status, _, _ := dget(t, c, path, nil); status != want {
			t.Errorf("GET %s: %d, want %d", path, status, want)
		}
	}
	// The device's downloader (ota/delta.Remote) against the real routes.
	rem := &delta.Remote{Client: c, BaseURL: e.srv.URL}
	if rm, rs, err := rem.Manifest(ctx, "3"); err != nil || !bytes.Equal(rm, mb) || len(rs) == 0 {
		t.Errorf("Remote.Manifest: %v", err)
	}
	if rib, err := rem.Index(ctx, "3", bundle.PartSystem); err != nil || !bytes.Equal(rib, ib) {
		t.Errorf("Remote.Index: %v", err)
	}
	if ch, err := rem.Chunk(ctx, ix.Chunks[1].SHA256); err != nil || hexSum(ch) != ix.Chunks[1].SHA256 {
		t.Errorf("Remote.Chunk: %v", err)
	}
	rc := rem.Bundle(ctx, "3")
	rb, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || hexSum(rb) != info3.SHA256 {
		t.Errorf("Remote.Bundle: %v, sha256 %s", err, hexSum(rb))
	}
	// Without a device certificate, nothing.
	if status, _, _ := dget(t, d.client(false), base+"manifest", nil); status != 401 {
		t.Errorf("manifest without a certificate: %d", status)
	}
	// A revoked device downloads nothing.
	if _, err := e.admin.Revoke(ctx, d.id); err != nil {
		t.Fatal(err)
	}
	if status, body, _ := dget(t, d.client(true), base+"manifest", nil); status != 403 || !strings.Contains(string(body), "revoked") {
		t.Errorf("manifest for a revoked device: %d %s", status, body)
	}
	// A server without trusted keys refuses pushes.
	plain := newEnv(t, storetest.Open(t, "sqlite"), fleet.WithReleaseDir(t.TempDir()))
	if status, _, ae := plain.push(t, b1); status != 409 || !strings.Contains(ae.Error, "trusted-key") {
		t.Errorf("push without trusted keys: %d %+v", status, ae)
	}
}

// beat sends a heartbeat running version with an update status (or none) and returns the
// release the fleet wants.
func (d *dev) beat(t *testing.T, c *http.Client, version string, u *api.UpdateStatus) string {
	t.Helper()
	var out api.HeartbeatResponse
	status, ae := post(t, c, d.e.srv.URL+api.PathHeartbeat, api.Heartbeat{Version: version, Slot: "a", UptimeSeconds: 1, Update: u}, &out)
	if status != 200 {
		t.Fatalf("heartbeat of %s: %d %+v", d.id, status, ae)
	}
	return out.Desired.Version
}

// fakeDev is a simulated device: it heartbeats, and when told a release it reports the
// outcome its test chose.
type fakeDev struct {
	*dev
	c       *http.Client
	running string
	fail    string // the failure reason it reports, or "" to commit
}

// step heartbeats once: a device told a new release reports its outcome.
func (f *fakeDev) step(t *testing.T) (told string) {
	t.Helper()
	told = f.beat(t, f.c, f.running, nil)
	if told == "" || told == f.running {
		return told
	}
	if f.fail != "" {
		f.beat(t, f.c, f.running, &api.UpdateStatus{Version: told, State: api.UpdateDownloading})
		f.beat(t, f.c, f.running, &api.UpdateStatus{Version: told, State: api.UpdateFailed, Reason: f.fail, Detail: "node not ready after 300s"})
		return told
	}
	f.beat(t, f.c, f.running, &api.UpdateStatus{Version: told, State: api.UpdateTrial})
	f.running = told
	f.beat(t, f.c, f.running, &api.UpdateStatus{Version: told, State: api.UpdateCommitted})
	return told
}

func (e *env) fleet(t *testing.T, n int, labels map[string]string, prefix string) []*fakeDev {
	t.Helper()
	tok, err := e.admin.CreateToken(ctx, api.TokenCreateRequest{TTLSeconds: 3600, Uses: n, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	var out []*fakeDev
	for i := range n {
		d := enrolled(t, e, fmt.Sprintf("%s-%02d", prefix, i), tok.Token)
		out = append(out, &fakeDev{dev: d, c: d.client(true), running: "1"})
	}
	return out
}

func (e *env) rollout(t *testing.T, version string) api.RolloutStatus {
	t.Helper()
	status, body := e.do(t, "GET", "/v1/admin/releases/"+version+"/rollout", nil)
	var st api.RolloutStatus
	if status != 200 || json.Unmarshal(body, &st) != nil {
		t.Fatalf("rollout status: %d %s", status, body)
	}
	return st
}

func (e *env) act(t *testing.T, version, action string, body any) (int, api.RolloutStatus, string) {
	t.Helper()
	path := "/v1/admin/releases/" + version + "/rollout"
	if action != "" {
		path += "/" + action
	}
	status, out := e.do(t, "POST", path, body)
	var st api.RolloutStatus
	if status == 200 {
		if err := json.Unmarshal(out, &st); err != nil {
			t.Fatal(err)
		}
	}
	return status, st, string(out)
}

func told(t *testing.T, devs []*fakeDev) (n int) {
	t.Helper()
	for _, d := range devs {
		if d.step(t) != "" {
			n++
		}
	}
	return n
}

func TestRolloutWaves(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st store.Store) {
		e := newReleaseEnv(t, st)
		berlin := e.fleet(t, 10, map[string]string{"site": "berlin"}, "ber")
		paris := e.fleet(t, 3, map[string]string{"site": "paris"}, "par")
		if status, _, ae := e.push(t, releasetest.Bundle(t, signKey, "2", releasetest.Data(1, 1000), releasetest.Data(2, 1000))); status != 200 {
			t.Fatalf("push: %d %+v", status, ae)
		}
		if status, _, body := e.act(t, "9", "", api.RolloutRequest{Waves: []float64{100}}); status != 404 {
			t.Errorf("rollout of an unknown release: %d %s", status, body)
		}
		if status, _, body := e.act(t, "2", "", map[string]any{"waves": []float64{50, 20}}); status != 400 {
			t.Errorf("bad waves: %d %s", status, body)
		}
		status, ro, body := e.act(t, "2", "", api.RolloutRequest{Selector: map[string]string{"site": "berlin"}, Waves: []float64{10, 50, 100}, MaxFailures: 10})
		if status != 200 || ro.State != api.RolloutRunning || ro.Selected != 10 || ro.Targeted != 1 || ro.Wave != 0 {
			t.Fatalf("start: %d %+v %s", status, ro, body)
		}
		if status, _, body := e.act(t, "2", "", api.RolloutRequest{Waves: []float64{100}}); status != 409 {
			t.Errorf("second rollout while one runs: %d %s", status, body)
		}
		// Wave by wave: 1, 5, then 10 devices told; Paris never.
		for i, want := range []int{1, 5, 10} {
			if n := told(t, berlin); n != want {
				t.Fatalf("wave %d: %d devices told, want %d", i+1, n, want)
			}
			if n := told(t, paris); n != 0 {
				t.Fatalf("wave %d: %d devices outside the selector told", i+1, n)
			}
			ro = e.rollout(t, "2")
			if ro.Targeted != want || ro.Committed != want || ro.Pending != 0 || ro.Wave != i {
				t.Fatalf("wave %d: %+v", i+1, ro)
			}
			// Pause holds the rollout where it is.
			if i == 1 {
				if status, ro, _ := e.act(t, "2", "pause", nil); status != 200 || ro.State != api.RolloutPaused {
					t.Fatalf("pause: %d %+v", status, ro)
				}
				if n, err := e.advance(t); err != nil || n != 0 || e.rollout(t, "2").Wave != 1 {
					t.Fatalf("a paused rollout advanced: %d %v", n, err)
				}
				if status, ro, _ := e.act(t, "2", "resume", nil); status != 200 || ro.State != api.RolloutRunning || ro.Wave != 2 {
					t.Fatalf("resume: %d %+v", status, ro)
				}
				continue
			}
			if n, err := e.advance(t); err != nil || n != 1 {
				t.Fatalf("advance after wave %d: %d %v", i+1, n, err)
			}
		}
		if ro := e.rollout(t, "2"); ro.State != api.RolloutCompleted || ro.Committed != 10 {
			t.Fatalf("after the last wave: %+v", ro)
		}
		// The device history has the update's states.
		detail, err := e.admin.Device(ctx, berlin[0].id)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, ev := range detail.Events {
			kinds = append(kinds, ev.Kind)
		}
		if got := strings.Join(kinds, " "); got != "update-committed update-trial update-target enrolled" {
			t.Errorf("events: %s", got)
		}
		if u := detail.Device.Update; u == nil || u.Version != "2" || u.State != api.UpdateCommitted || detail.Device.DesiredVer != "2" {
			t.Errorf("device update status: %+v", detail.Device)
		}
		_, metrics, _ := dget(t, e.srv.Client(), e.srv.URL+"/metrics", nil)
		for _, want := range []string{`edgeimg_fleet_rollout_state{state="completed",version="2"} 1`, `edgeimg_fleet_rollout_devices{status="committed",version="2"} 10`, `edgeimg_fleet_releases 1`} {
			if !strings.Contains(string(metrics), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		// A finished rollout makes way for the next.
		if status, _, body := e.act(t, "2", "", api.RolloutRequest{Waves: []float64{100}}); status != 200 {
			t.Errorf("rollout after completion: %d %s", status, body)
		}
	})
}

func (e *env) advance(t *testing.T) (int, error) {
	t.Helper()
	return e.srvH.AdvanceRollouts(ctx)
}

func TestRolloutHalts(t *testing.T) {
	storetest.Each(t, testRolloutHalts)
}

func testRolloutHalts(t *testing.T, st store.Store) {
	e := newReleaseEnv(t, st)
	devs := e.fleet(t, 10, nil, "dev")
	if status, _, ae := e.push(t, releasetest.Bundle(t, signKey, "2", releasetest.Data(1, 1000), releasetest.Data(2, 1000))); status != 200 {
		t.Fatalf("push: %d %+v", status, ae)
	}
	for _, d := range devs {
		d.fail = "health timeout" // every device of the first wave fails its health check
	}
	status, ro, body := e.act(t, "2", "", api.RolloutRequest{Waves: []float64{20, 100}, MaxFailures: 2})
	if status != 200 || ro.Targeted != 2 {
		t.Fatalf("start: %d %s", status, body)
	}
	if n := told(t, devs); n != 2 {
		t.Fatalf("first wave: %d told", n)
	}
	if n, err := e.advance(t); err != nil || n != 1 {
		t.Fatalf("advance: %d %v", n, err)
	}
	ro = e.rollout(t, "2")
	if ro.State != api.RolloutHalted || ro.Wave != 0 || ro.Failed != 2 || !strings.Contains(ro.Reason, "2 of 2 targeted devices failed") ||
		len(ro.Failures) != 2 || ro.Failures[0].Reason != "health timeout" || ro.Failures[0].State != api.UpdateFailed {
		t.Fatalf("halted rollout: %+v", ro)
	}
	// Halted: the second wave is never told, however often the rollout is advanced.
	for range 3 {
		if n, err := e.advance(t); err != nil || n != 0 {
			t.Fatalf("advance a halted rollout: %d %v", n, err)
		}
	}
	if ro := e.rollout(t, "2"); ro.Targeted != 2 || ro.State != api.RolloutHalted {
		t.Fatalf("after advancing a halted rollout: %+v", ro)
	}
	// Shown on the dashboard with its reason.
	b := e.browser(t)
	if resp, _ := fetch(t, b, "GET", e.loginLink(t), nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	resp, page := fetch(t, b, "GET", e.srv.URL+"/releases", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(page, "halted") || !strings.Contains(page, "2 of 2 targeted devices failed") || !strings.Contains(page, "health timeout") {
		t.Errorf("releases page: %d\n%s", resp.StatusCode, page)
	}
	if resp, page := fetch(t, b, "GET", e.srv.URL+"/", nil, nil); resp.StatusCode != 200 || !strings.Contains(page, `id="rollout-banner-2"`) || !strings.Contains(page, "2 of 2 targeted devices failed") {
		t.Errorf("overview without the halted rollout: %d\n%s", resp.StatusCode, page)
	}
	var failed *fakeDev
	for _, d := range devs {
		if d.running == "1" && strings.Contains(ro.Failures[0].DeviceID, d.id) {
			failed = d
		}
	}
	if resp, page := fetch(t, b, "GET", e.srv.URL+"/devices/"+failed.id, nil, nil); resp.StatusCode != 200 ||
		!strings.Contains(page, `id="update" class="update-failed"`) || !strings.Contains(page, "health timeout") || !strings.Contains(page, `class="event-update-failed"`) {
		t.Errorf("device page of %s: %d\n%s", failed.id, resp.StatusCode, page)
	}
	// Resume goes on despite the known failures; the devices now commit.
	for _, d := range devs {
		d.fail = ""
	}
	if status, ro, body := e.act(t, "2", "resume", nil); status != 200 || ro.State != api.RolloutRunning || ro.Wave != 1 || ro.Targeted != 10 {
		t.Fatalf("resume: %d %+v %s", status, ro, body)
	}
	told(t, devs)
	// Abort: devices that did not move are told nothing any more.
	if status, ro, body := e.act(t, "2", "abort", nil); status != 200 || ro.State != api.RolloutAborted {
		t.Fatalf("abort: %d %+v %s", status, ro, body)
	}
	for _, d := range devs {
		want := ""
		if d.running == "2" {
			want = "2"
		}
		if got := d.beat(t, d.c, d.running, nil); got != want {
			t.Errorf("%s running %s after the abort: told %q", d.id, d.running, got)
		}
	}
	if status, _, _ := e.act(t, "2", "resume", nil); status != 409 {
		t.Errorf("resume an aborted rollout: %d", status)
	}
}

// TestRolloutReplicas runs two fleet servers on one PostgreSQL database advancing the same
// rollout concurrently: each wave starts exactly once.
func TestRolloutReplicas(t *testing.T) {
	url := storetest.PostgresURL(t)
	var sts []*store.SQL
	for range 2 {
		st, err := store.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		sts = append(sts, st)
	}
	e := newReleaseEnv(t, sts[0])
	other := fleet.NewServer(sts[1], e.ca)
	devs := e.fleet(t, 8, nil, "dev")
	if status, _, ae := e.push(t, releasetest.Bundle(t, signKey, "2", releasetest.Data(1, 1000), releasetest.Data(2, 1000))); status != 200 {
		t.Fatalf("push: %d %+v", status, ae)
	}
	waves := []float64{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
	if status, _, body := e.act(t, "2", "", api.RolloutRequest{Waves: waves, MaxFailures: 0}); status != 200 {
		t.Fatalf("start: %s", body)
	}
	for ro := e.rollout(t, "2"); ro.State == api.RolloutRunning; ro = e.rollout(t, "2") {
		told(t, devs)
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for i := range 40 {
			srv := e.srvH
			if i%2 == 1 {
				srv = other
			}
			wg.Go(func() {
				if _, err := srv.AdvanceRollouts(context.Background()); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	evs, err := sts[1].RolloutEvents(ctx, "2", 100)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, ev := range evs {
		count[ev.Kind]++
	}
	if count["wave"] != len(waves) || count["completed"] != 1 || count["started"] != 1 {
		t.Errorf("rollout events: %v, want %d waves, one start, one completion", count, len(waves))
	}
	if ro := e.rollout(t, "2"); ro.State != api.RolloutCompleted || ro.Committed != 8 {
		t.Errorf("rollout: %+v", ro)
	}
}
