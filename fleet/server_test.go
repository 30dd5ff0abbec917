package fleet_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/client"
	"github.com/edgeimg/edgeimg/fleet/pki"
	"github.com/edgeimg/edgeimg/fleet/store"
	"github.com/edgeimg/edgeimg/fleet/store/storetest"
)

var ctx = context.Background()

// clock is a settable clock for the server.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type env struct {
	dir   string
	ca    *pki.CA
	srv   *httptest.Server
	srvH  *fleet.Server
	st    store.Store
	admin *client.Admin
	clock *clock
}

// newEnv runs a fleet server over TLS on 127.0.0.1 with a CA made by pki.Init.
func newEnv(t *testing.T, st store.Store, opts ...fleet.Option) *env {
	t.Helper()
	dir := t.TempDir()
	if err := pki.Init(dir, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	token, err := pki.ReadAdminToken(filepath.Join(dir, pki.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now()}
	h := fleet.NewServer(st, ca, append([]fleet.Option{fleet.WithAdminToken(token), fleet.WithClock(c.now)}, opts...)...)
	srv := httptest.NewUnstartedServer(h)
	srv.TLS, err = pki.ServerTLSConfig(ca, filepath.Join(dir, pki.ServerFile), filepath.Join(dir, pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes refused on purpose
	srv.StartTLS()
	t.Cleanup(srv.Close)
	admin, err := client.NewAdmin(srv.URL, token, ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &env{dir: dir, ca: ca, srv: srv, srvH: h, st: st, admin: admin, clock: c}
}

// dev is a device in a test: its key and, once enrolled, its certificate.
type dev struct {
	id   string
	key  ed25519.PrivateKey
	cert tls.Certificate
	e    *env
}

func (e *env) newDev(id string) *dev {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	return &dev{id: id, key: key, e: e}
}

func (d *dev) csr(t *testing.T, cn string) string {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, d.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func (d *dev) client(withCert bool) *http.Client {
	conf := &tls.Config{RootCAs: d.e.ca.Pool()}
	if withCert {
		conf.Certificates = []tls.Certificate{d.cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
}

// post sends body (a value or raw []byte) and decodes the answer into out or an api.Error.
func post(t *testing.T, c *http.Client, url string, body any, out any) (int, api.Error) {
	t.Helper()
	raw, ok := body.([]byte)
	if !ok {
		raw, _ = json.Marshal(body)
	}
	resp, err := c.Post(url, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e api.Error
	if resp.StatusCode != 200 {
		if err := json.Unmarshal(data, &e); err != nil || e.Error == "" || e.Code == "" {
			t.Errorf("POST %s: %d with no JSON error: %q", url, resp.StatusCode, data)
		}
		return resp.StatusCode, e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, e
}

func (d *dev) enroll(t *testing.T, token string) (int, api.Error, *api.EnrollResponse) {
	t.Helper()
	var out api.EnrollResponse
	status, e := post(t, d.client(d.cert.Certificate != nil && token == ""), d.e.srv.URL+api.PathEnroll,
		api.EnrollRequest{Token: token, DeviceID: d.id, CSR: d.csr(t, d.id), Hostname: "host-" + strings.ToLower(d.id), Labels: map[string]string{"own": "yes"}, Version: "v1.0.0", Slot: "a"}, &out)
	if status == 200 {
		block, _ := pem.Decode([]byte(out.Certificate))
		d.cert = tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: d.key}
	}
	return status, e, &out
}

func (d *dev) heartbeat(t *testing.T, c *http.Client) (int, api.Error, *api.HeartbeatResponse) {
	t.Helper()
	var out api.HeartbeatResponse
	status, e := post(t, c, d.e.srv.URL+api.PathHeartbeat, api.Heartbeat{Version: "v1.0.0", Slot: "a", Role: "server", UptimeSeconds: 60, NodeReady: true, MemUsed: 1 << 20, MemTotal: 4 << 30, DiskUsed: 1 << 30, DiskTotal: 32 << 30}, &out)
	return status, e, &out
}

func token(t *testing.T, e *env, uses int, ttl time.Duration, role *api.Role) string {
	t.Helper()
	tok, err := e.admin.CreateToken(ctx, api.TokenCreateRequest{TTLSeconds: int64(ttl / time.Second), Uses: uses, Labels: map[string]string{"site": "berlin"}, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

func TestEnrollHeartbeatRevoke(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		tok := token(t, e, 2, time.Hour, &api.Role{Kind: api.RoleAgent, ServerURL: "https://10.1.2.3:6443", Token: "K10secret"})
		d := e.newDev("10000000c0ffee01")
		status, apiErr, resp := d.enroll(t, tok)
		if status != 200 {
			t.Fatalf("enroll: %d %+v", status, apiErr)
		}
		if resp.DeviceID != d.id || resp.Role.Kind != api.RoleAgent || resp.Role.Token != "K10secret" || resp.HeartbeatIntervalSeconds != 30 || resp.CA != string(e.ca.CertPEM) {
			t.Errorf("enroll answer: %+v", resp)
		}
		c := d.client(true)
		for range 3 {
			status, apiErr, hb := d.heartbeat(t, c)
			if status != 200 || hb.Desired.Role.Kind != api.RoleAgent || hb.Desired.Reset {
				t.Fatalf("heartbeat: %d %+v %+v", status, apiErr, hb)
			}
		}
		detail, err := e.admin.Device(ctx, d.id)
		if err != nil {
			t.Fatal(err)
		}
		if detail.Device.Labels["site"] != "berlin" || detail.Device.Labels["own"] != "yes" || len(detail.Heartbeats) != 3 ||
			detail.Device.LastHeartbeat == nil || detail.Device.LastHeartbeat.MemTotal != 4<<30 || len(detail.Events) != 1 {
			t.Errorf("device detail: %+v", detail)
		}
		if devs, err := e.admin.Devices(ctx, api.StateActive, map[string]string{"site": "berlin"}); err != nil || len(devs) != 1 {
			t.Errorf("devices: %v %v", devs, err)
		}
		if _, err := e.admin.Label(ctx, d.id, api.LabelRequest{Set: map[string]string{"truck": "42"}}); err != nil {
			t.Fatal(err)
		}

		// Revocation takes effect at once, on the same kept-alive TLS connection.
		if _, err := e.admin.Revoke(ctx, d.id); err != nil {
			t.Fatal(err)
		}
		if status, apiErr, _ := d.heartbeat(t, c); status != 403 || apiErr.Code != "revoked" || !strings.Contains(apiErr.Error, "revoked") {
			t.Errorf("heartbeat of a revoked device: %d %+v", status, apiErr)
		}
		if status, apiErr, _ := d.enroll(t, tok); status != 403 || apiErr.Code != "revoked" {
			t.Errorf("enrollment of a revoked device: %d %+v", status, apiErr)
		}
		if status, apiErr, _ := d.enroll(t, ""); status != 403 || apiErr.Code != "revoked" {
			t.Errorf("enrollment of a revoked device by certificate: %d %+v", status, apiErr)
		}

		metrics := get(t, http.DefaultClient, e.srv, "/metrics")
		for _, want := range []string{`edgeimg_fleet_enrollments_total{result="ok"} 1`, `edgeimg_fleet_enrollments_total{result="revoked"} 2`,
			`edgeimg_fleet_heartbeats_total{result="ok"} 3`, `edgeimg_fleet_heartbeats_total{result="revoked"} 1`,
			`edgeimg_fleet_devices{state="revoked"} 1`, `edgeimg_fleet_devices{state="active"} 0`, `edgeimg_fleet_http_request_duration_seconds_count{route="POST /v1/heartbeat"} 4`,
			// One after another: each heartbeat its own batch.
			`edgeimg_fleet_heartbeat_batches_total 4`, `edgeimg_fleet_heartbeats_batched_total 4`} {
			if !strings.Contains(metrics, want+"\n") {
				t.Errorf("/metrics has no %q", want)
			}
		}
		if h := get(t, http.DefaultClient, e.srv, "/healthz"); !strings.Contains(h, `"ok"`) {
			t.Errorf("healthz: %s", h)
		}
	})
}

func get(t *testing.T, _ *http.Client, srv *httptest.Server, path string) string {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestRefusals(t *testing.T) {
	e := newEnv(t, storetest.Open(t, "sqlite"))
	tok := token(t, e, 1, time.Hour, nil)
	short := token(t, e, 5, time.Minute, nil)
	d := e.newDev("dev-1")
	c := d.client(false)
	url := e.srv.URL + api.PathEnroll
	good := api.EnrollRequest{Token: tok, DeviceID: d.id, CSR: d.csr(t, d.id)}
	withCSR := func(csr string) api.EnrollRequest { r := good; r.CSR = csr; return r }
	withToken := func(tk string) api.EnrollRequest { r := good; r.Token = tk; return r }
	big := []byte(`{"token":"` + strings.Repeat("x", api.MaxEnrollBytes) + `"}`)
	e.clock.add(2 * time.Minute) // "short" has expired
	for name, c2 := range map[string]struct {
		body   any
		status int
		code   string
		reason string
	}{
		"forged token":  {withToken("edg_forged"), 401, "unknown_token", "unknown enrollment token"},
		"expired token": {withToken(short), 401, "expired_token", "expired at"},
		"no token":      {withToken(""), 401, "unauthorized", "needs a token"},
		"other cn":      {withCSR(d.csr(t, "dev-2")), 400, "bad_csr", `common name "dev-2" is not the device id "dev-1"`},
		"not a csr":     {withCSR("hello"), 400, "bad_csr", "not one PEM"},
		"unknown field": {[]byte(`{"token":"x","device_id":"d","csr":"c","admin":true}`), 400, "bad_request", `unknown field "admin"`},
		"malformed":     {[]byte(`{"token":`), 400, "bad_request", "malformed JSON"},
		"oversized":     {big, 413, "too_large", "larger than"},
		"bad id":        {[]byte(`{"token":"x","device_id":"../../etc","csr":"c"}`), 400, "bad_request", "device id"},
	} {
		status, apiErr := post(t, c, url, c2.body, nil)
		if status != c2.status || apiErr.Code != c2.code || !strings.Contains(apiErr.Error, c2.reason) {
			t.Errorf("%s: %d %+v, want %d %s %q", name, status, apiErr, c2.status, c2.code, c2.reason)
		}
	}
	// Nothing was stored, and no token use was spent.
	if devs, _ := e.admin.Devices(ctx, "", nil); len(devs) != 0 {
		t.Errorf("refused enrollments stored %d devices", len(devs))
	}
	if status, apiErr, _ := d.enroll(t, tok); status != 200 {
		t.Fatalf("enroll: %d %+v", status, apiErr)
	}
	// The token had one use: another device is refused; the same one again is fine (a retry).
	if status, apiErr, _ := e.newDev("dev-2").enroll(t, tok); status != 401 || apiErr.Code != "used_up_token" {
		t.Errorf("used-up token: %d %+v", status, apiErr)
	}
	if status, _, _ := d.enroll(t, tok); status != 200 {
		t.Errorf("retry with the same key: %d", status)
	}
	// Another card claiming an enrolled device's ID is refused.
	if status, apiErr, _ := e.newDev("dev-1").enroll(t, token(t, e, 1, time.Hour, nil)); status != 409 || apiErr.Code != "conflict" || !strings.Contains(apiErr.Error, "edgeimg fleet device reset dev-1") {
		t.Errorf("other key: %d %+v", status, apiErr)
	}

	// Device routes need the device's certificate; another CA's certificate fails the handshake.
	if status, apiErr, _ := d.heartbeat(t, c); status != 401 || apiErr.Code != "unauthorized" {
		t.Errorf("heartbeat without certificate: %d %+v", status, apiErr)
	}
	otherDir := t.TempDir()
	if err := pki.Init(otherDir, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	other, _ := pki.LoadCA(filepath.Join(otherDir, pki.CAFile), filepath.Join(otherDir, pki.CAKeyFile))
	csr, _ := pki.ParseCSR([]byte(d.csr(t, d.id)), d.id)
	iss, _ := other.Sign(csr, time.Now(), time.Hour)
	block, _ := pem.Decode(iss.CertPEM)
	forged := &dev{id: d.id, key: d.key, cert: tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: d.key}, e: e}
	if _, err := forged.client(true).Post(e.srv.URL+api.PathHeartbeat, "application/json", strings.NewReader("{}")); err == nil {
		t.Error("a certificate of another CA was accepted")
	}
	// A heartbeat that is not one.
	if status, apiErr := post(t, d.client(true), e.srv.URL+api.PathHeartbeat, []byte(`{"mem_used":5,"mem_total":1}`), nil); status != 400 || !strings.Contains(apiErr.Error, "larger than the total") {
		t.Errorf("bad heartbeat: %d %+v", status, apiErr)
	}

	// The admin API needs the admin token; devices' certificates do not open it.
	for _, auth := range []string{"", "Bearer wrong", "Basic x"} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/admin/devices", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := d.client(true).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("admin with %q: %d", auth, resp.StatusCode)
		}
	}
	var ce *client.Error
	if _, err := e.admin.Revoke(ctx, "nobody"); !errors.As(err, &ce) || ce.Status != 404 {
		t.Errorf("revoke unknown: %v", err)
	}
}

func TestEnrollRateLimit(t *testing.T) {
	e := newEnv(t, storetest.Open(t, "sqlite"), fleet.WithEnrollRate(0.001, 3))
	d := e.newDev("dev-1")
	for i := range 4 {
		status, apiErr, _ := d.enroll(t, "edg_nope")
		want := 401
		if i == 3 {
			want = 429
		}
		if status != want {
			t.Errorf("request %d: %d %+v, want %d", i, status, apiErr, want)
		}
	}
}

func TestResetAndRenew(t *testing.T) {
	e := newEnv(t, storetest.Open(t, "sqlite"), fleet.WithDeviceValidity(2*time.Hour))
	tok := token(t, e, 5, time.Hour, nil)
	d := e.newDev("dev-1")
	if status, apiErr, _ := d.enroll(t, tok); status != 200 {
		t.Fatalf("enroll: %d %+v", status, apiErr)
	}
	// Renewal: a new certificate for the same key; another key is refused.
	var rn api.RenewResponse
	if status, apiErr := post(t, d.client(true), e.srv.URL+api.PathRenew, api.RenewRequest{CSR: d.csr(t, d.id)}, &rn); status != 200 {
		t.Fatalf("renew: %d %+v", status, apiErr)
	}
	block, _ := pem.Decode([]byte(rn.Certificate))
	cert, _ := x509.ParseCertificate(block.Bytes)
	if cert.Subject.CommonName != d.id || cert.NotAfter.Sub(e.clock.now()) > 2*time.Hour {
		t.Errorf("renewed certificate: %v until %v", cert.Subject, cert.NotAfter)
	}
	other := e.newDev(d.id)
	if status, apiErr := post(t, d.client(true), e.srv.URL+api.PathRenew, api.RenewRequest{CSR: other.csr(t, d.id)}, nil); status != 403 || apiErr.Code != "key_mismatch" {
		t.Errorf("renew with another key: %d %+v", status, apiErr)
	}

	if _, err := e.admin.Reset(ctx, d.id); err != nil {
		t.Fatal(err)
	}
	if status, _, hb := d.heartbeat(t, d.client(true)); status != 200 || !hb.Desired.Reset {
		t.Fatalf("heartbeat after a reset order: %d %+v", status, hb)
	}
	// Re-enrollment with the certificate (no token) clears the reset.
	if status, apiErr, _ := d.enroll(t, ""); status != 200 {
		t.Fatalf("re-enroll by certificate: %d %+v", status, apiErr)
	}
	if status, _, hb := d.heartbeat(t, d.client(true)); status != 200 || hb.Desired.Reset {
		t.Errorf("heartbeat after re-enrolling: %d %+v", status, hb)
	}
	// A reset also lets a card with a new key (a reflashed card) enroll with a token.
	if _, err := e.admin.Reset(ctx, d.id); err != nil {
		t.Fatal(err)
	}
	if status, apiErr, _ := other.enroll(t, tok); status != 200 {
		t.Fatalf("enroll with a new key after reset: %d %+v", status, apiErr)
	}
	// ... and the old key stops working.
	if status, apiErr, _ := d.heartbeat(t, d.client(true)); status != 403 || apiErr.Code != "key_mismatch" {
		t.Errorf("old key after re-enrollment: %d %+v", status, apiErr)
	}
	if tl, _ := e.admin.Tokens(ctx); len(tl) != 1 || tl[0].UsesLeft != 3 {
		t.Errorf("tokens: %+v", tl)
	}
}

// failAfterStore is a real store whose Enroll stores and then reports a failure, as a server
// that dies after committing and before answering.
type failAfterStore struct {
	store.Store
	mu    sync.Mutex
	fails int
}

func (f *failAfterStore) Enroll(ctx context.Context, e store.Enrollment) (api.Device, error) {
	d, err := f.Store.Enroll(ctx, e)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil && f.fails > 0 {
		f.fails--
		return api.Device{}, errors.New("lost after commit")
	}
	return d, err
}

func TestEnrollLostAnswer(t *testing.T) {
	st := &failAfterStore{Store: storetest.Open(t, "sqlite"), fails: 2}
	e := newEnv(t, st)
	tok := token(t, e, 1, time.Hour, nil)
	d := e.newDev("dev-1")
	for i := range 3 {
		status, apiErr, _ := d.enroll(t, tok)
		if want := map[bool]int{true: 500, false: 200}[i < 2]; status != want {
			t.Fatalf("attempt %d: %d %+v, want %d", i, status, apiErr, want)
		}
	}
	devs, _ := e.admin.Devices(ctx, "", nil)
	tl, _ := e.admin.Tokens(ctx)
	if len(devs) != 1 || tl[0].UsesLeft != 0 {
		t.Errorf("%d devices, %d uses left", len(devs), tl[0].UsesLeft)
	}
	if status, _, _ := d.heartbeat(t, d.client(true)); status != 200 {
		t.Errorf("heartbeat: %d", status)
	}
}

func TestMain(m *testing.M) { os.Exit(m.Run()) }
