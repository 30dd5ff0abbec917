package fleet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/pki"
	"github.com/edgeimg/edgeimg/fleet/releases"
	"github.com/edgeimg/edgeimg/fleet/store"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// Server is the fleet server's http.Handler.
type Server struct {
	store   store.Store
	ca      *pki.CA
	o       options
	mux     *http.ServeMux
	limiter *limiter
	reg     *prometheus.Registry
	m       metrics
	rel     *releases.Store // nil without WithReleaseDir
	// dashboard (dashboard.go)
	links        *loginLinks
	loginLimiter *limiter
}

type options struct {
	adminToken        string
	now               func() time.Time
	enrollRate        float64
	enrollBurst       int
	heartbeatInterval time.Duration
	deviceValidity    time.Duration
	log               *slog.Logger
	publicURL         string
	releaseDir        string
	trusted           bundle.Keyring
	rolloutInterval   time.Duration
}

// Option configures NewServer.
type Option func(*options)

// WithAdminToken sets the admin API's Bearer token. Default: none, and the admin API refuses
// every request.
func WithAdminToken(token string) Option { return func(o *options) { o.adminToken = token } }

// WithClock sets the clock (token expiry, certificate validity, heartbeat times). Default time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithEnrollRate limits enrollments per source IP to perSecond with bursts of burst.
// Default 2 per second, bursts of 20; perSecond 0 turns the limit off.
func WithEnrollRate(perSecond float64, burst int) Option {
	return func(o *options) { o.enrollRate, o.enrollBurst = perSecond, burst }
}

// WithHeartbeatInterval sets the interval told to devices at enrollment. Default 30 s.
func WithHeartbeatInterval(d time.Duration) Option {
	return func(o *options) { o.heartbeatInterval = d }
}

// WithDeviceValidity sets the lifetime of device certificates. Default pki.DeviceValidity (30 days).
func WithDeviceValidity(d time.Duration) Option { return func(o *options) { o.deviceValidity = d } }

// WithLogger sets the logger of server errors. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithPublicURL sets the URL devices and people reach the server at (for links). Default: none.
func WithPublicURL(u string) Option { return func(o *options) { o.publicURL = u } }

type metrics struct {
	enrollments *prometheus.CounterVec
	heartbeats  *prometheus.CounterVec
	requests    *prometheus.HistogramVec
}

// NewServer returns the fleet server on st, signing device certificates with ca. Routes:
// POST /v1/enroll (token or device certificate), POST /v1/renew and POST /v1/heartbeat
// (device certificate), the release downloads (device certificate; api/release.go),
// /v1/admin/… (admin token), GET /metrics and GET /healthz. Rollouts advance when an admin
// acts on them and when RunRollouts (started by the caller) ticks.
// Device certificates are verified by TLS (tls.VerifyClientCertIfGiven against the CA, see
// pki.ServerTLSConfig); the device's row (state, key) is checked on every request.
func NewServer(st store.Store, ca *pki.CA, opts ...Option) *Server {
	o := options{now: time.Now, enrollRate: 2, enrollBurst: 20, heartbeatInterval: 30 * time.Second, deviceValidity: pki.DeviceValidity,
		log: slog.New(slog.DiscardHandler), rolloutInterval: 2 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{store: st, ca: ca, o: o, mux: http.NewServeMux(), reg: prometheus.NewRegistry()}
	if o.releaseDir != "" {
		s.rel = &releases.Store{Dir: o.releaseDir}
	}
	if o.enrollRate > 0 {
		s.limiter = newLimiter(o.enrollRate, o.enrollBurst)
	}
	s.m = metrics{
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgeimg_fleet_enrollments_total", Help: "Enrollment requests by result code (ok or the error code)."}, []string{"result"}),
		heartbeats:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgeimg_fleet_heartbeats_total", Help: "Heartbeats by result code (ok or the error code)."}, []string{"result"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "edgeimg_fleet_http_request_duration_seconds", Help: "HTTP request durations by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"route"}),
	}
	s.reg.MustRegister(s.m.enrollments, s.m.heartbeats, s.m.requests, devicesCollector{st}, rolloutCollector{s},
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	if bs, ok := st.(batchStatser); ok {
		s.reg.MustRegister(batchCollector{bs})
	}

	s.mux.HandleFunc("POST "+api.PathEnroll, s.enroll)
	s.mux.HandleFunc("POST "+api.PathRenew, s.renew)
	s.mux.HandleFunc("POST "+api.PathHeartbeat, s.heartbeat)
	s.mux.HandleFunc("POST /v1/admin/tokens", s.admin(s.createToken))
	s.mux.HandleFunc("GET /v1/admin/tokens", s.admin(s.listTokens))
	s.mux.HandleFunc("POST /v1/admin/tokens/{id}/revoke", s.admin(s.revokeToken))
	s.mux.HandleFunc("GET /v1/admin/devices", s.admin(s.listDevices))
	s.mux.HandleFunc("GET /v1/admin/devices/{id}", s.admin(s.showDevice))
	s.mux.HandleFunc("POST /v1/admin/devices/{id}/labels", s.admin(s.labelDevice))
	s.mux.HandleFunc("POST /v1/admin/devices/{id}/revoke", s.admin(s.revokeDevice))
	s.mux.HandleFunc("POST /v1/admin/devices/{id}/reset", s.admin(s.resetDevice))
	s.mux.HandleFunc("POST /v1/admin/devices/{id}/role", s.admin(s.roleDevice))
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.routeReleases()
	s.routeDashboard()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, api.Errorf(http.StatusNotFound, "not_found", "no route %s %s", r.Method, r.URL.Path))
	})
	return s
}

// Handle registers an extra handler (e.g. the dashboard) on the server's mux.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Registry returns the server's Prometheus registry, for more collectors.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.mux.ServeHTTP(w, r) // sets r.Pattern
	pattern := r.Pattern
	if pattern == "" || pattern == "/" {
		pattern = "other"
	}
	s.m.requests.WithLabelValues(pattern).Observe(time.Since(start).Seconds())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *api.RequestError) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgeimg fleet"`)
	}
	writeJSON(w, e.Status, api.Error{Error: e.Reason, Code: e.Code})
}

// fail answers err: a RequestError as it is, store errors by kind, anything else 500 (logged).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) string {
	var re *api.RequestError
	switch {
	case errors.As(err, &re):
	case errors.Is(err, store.ErrUnknownToken):
		re = api.Errorf(http.StatusUnauthorized, "unknown_token", "unknown enrollment token")
	case errors.Is(err, store.ErrExpiredToken):
		re = api.Errorf(http.StatusUnauthorized, "expired_token", "%v", err)
	case errors.Is(err, store.ErrUsedUpToken):
		re = api.Errorf(http.StatusUnauthorized, "used_up_token", "%v", err)
	case errors.Is(err, store.ErrRevokedToken):
		re = api.Errorf(http.StatusUnauthorized, "revoked_token", "%v", err)
	case errors.Is(err, store.ErrRevoked):
		re = api.Errorf(http.StatusForbidden, "revoked", "%v", err)
	case errors.Is(err, store.ErrKeyMismatch):
		re = api.Errorf(http.StatusForbidden, "key_mismatch", "%v", err)
	case errors.Is(err, store.ErrConflict):
		re = api.Errorf(http.StatusConflict, "conflict", "%v", err)
	case errors.Is(err, store.ErrRolloutConflict), errors.Is(err, store.ErrReleaseConflict):
		re = api.Errorf(http.StatusConflict, "conflict", "%v", err)
	case errors.Is(err, store.ErrNotFound):
		re = api.Errorf(http.StatusNotFound, "not_found", "%v", err)
	case errors.Is(err, context.Canceled):
		re = api.Errorf(499, "canceled", "request canceled")
	default:
		s.o.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		re = api.Errorf(http.StatusInternalServerError, "internal", "internal error")
	}
	writeError(w, re)
	return re.Code
}

// peer returns the verified client certificate, or nil.
func peer(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0][0]
}

// device returns the device ID and key hash of the request's client certificate.
func device(r *http.Request) (id, keySum string, err error) {
	cert := peer(r)
	if cert == nil {
		return "", "", api.Errorf(http.StatusUnauthorized, "unauthorized", "this route needs the device's client certificate")
	}
	return cert.Subject.CommonName, pki.CertKeySHA256(cert), nil
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	code := s.enrollCode(w, r)
	s.m.enrollments.WithLabelValues(code).Inc()
}

func (s *Server) enrollCode(w http.ResponseWriter, r *http.Request) string {
	now := s.o.now()
	if s.limiter != nil && !s.limiter.allow(clientIP(r), now) {
		w.Header().Set("Retry-After", "1")
		return s.fail(w, r, api.Errorf(http.StatusTooManyRequests, "rate_limited", "too many enrollments from %s: retry later", clientIP(r)))
	}
	req, err := api.Decode[api.EnrollRequest](http.MaxBytesReader(w, r.Body, api.MaxEnrollBytes), api.MaxEnrollBytes)
	if err != nil {
		return s.fail(w, r, err)
	}
	e := store.Enrollment{DeviceID: req.DeviceID, Hostname: req.Hostname, Labels: req.Labels, Version: req.Version, Slot: req.Slot, At: now}
	var peerKey string
	if req.Token == "" {
		id, keySum, err := device(r)
		if err != nil {
			return s.fail(w, r, api.Errorf(http.StatusUnauthorized, "unauthorized", "enrollment needs a token, or the device's certificate to enroll again"))
		}
		if id != req.DeviceID {
			return s.fail(w, r, api.Errorf(http.StatusForbidden, "unauthorized", "the client certificate is for device %q, not %q", id, req.DeviceID))
		}
		e.ByCert, peerKey = true, keySum
	} else {
		e.TokenHash = HashToken(req.Token)
	}
	csr, err := pki.ParseCSR([]byte(req.CSR), req.DeviceID)
	if err != nil {
		return s.fail(w, r, api.Errorf(http.StatusBadRequest, "bad_csr", "%v", err))
	}
	iss, err := s.ca.Sign(csr, now, s.o.deviceValidity)
	if err != nil {
		return s.fail(w, r, err)
	}
	if e.ByCert && iss.KeySHA256 != peerKey {
		return s.fail(w, r, api.Errorf(http.StatusForbidden, "key_mismatch", "the CSR's key is not the client certificate's: enrolling again with the certificate keeps the key"))
	}
	e.KeySHA256, e.CertSerial, e.CertNotAfter = iss.KeySHA256, iss.Serial, iss.NotAfter
	dev, err := s.store.Enroll(r.Context(), e)
	if err != nil {
		return s.fail(w, r, err)
	}
	writeJSON(w, http.StatusOK, api.EnrollResponse{
		DeviceID:                 dev.ID,
		Certificate:              string(iss.CertPEM),
		CA:                       string(s.ca.CertPEM),
		Role:                     dev.Role,
		HeartbeatIntervalSeconds: int(s.o.heartbeatInterval / time.Second),
	})
	return "ok"
}

func (s *Server) renew(w http.ResponseWriter, r *http.Request) {
	now := s.o.now()
	id, keySum, err := device(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	req, err := api.Decode[api.RenewRequest](http.MaxBytesReader(w, r.Body, api.MaxEnrollBytes), api.MaxEnrollBytes)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	csr, err := pki.ParseCSR([]byte(req.CSR), id)
	if err != nil {
		s.fail(w, r, api.Errorf(http.StatusBadRequest, "bad_csr", "%v", err))
		return
	}
	iss, err := s.ca.Sign(csr, now, s.o.deviceValidity)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if iss.KeySHA256 != keySum {
		s.fail(w, r, api.Errorf(http.StatusForbidden, "key_mismatch", "the CSR's key is not the client certificate's: renewal keeps the key"))
		return
	}
	if _, err := s.store.Renew(r.Context(), id, keySum, iss.Serial, iss.NotAfter, now); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.RenewResponse{Certificate: string(iss.CertPEM), CA: string(s.ca.CertPEM)})
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	code := s.heartbeatCode(w, r)
	s.m.heartbeats.WithLabelValues(code).Inc()
}

func (s *Server) heartbeatCode(w http.ResponseWriter, r *http.Request) string {
	id, keySum, err := device(r)
	if err != nil {
		return s.fail(w, r, err)
	}
	hb, err := api.Decode[api.Heartbeat](http.MaxBytesReader(w, r.Body, api.MaxHeartbeatBytes), api.MaxHeartbeatBytes)
	if err != nil {
		return s.fail(w, r, err)
	}
	desired, err := s.store.Heartbeat(r.Context(), id, keySum, *hb, s.o.now())
	if errors.Is(err, store.ErrNotFound) {
		err = api.Errorf(http.StatusForbidden, "unknown_device", "device %s is not enrolled", id)
	}
	if err != nil {
		return s.fail(w, r, err)
	}
	writeJSON(w, http.StatusOK, api.HeartbeatResponse{Desired: desired})
	return "ok"
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "store unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// HashToken returns the hex SHA-256 of an enrollment token, as the store keeps it.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// NewToken returns a new random enrollment token and its ID (the first 12 hex digits of its hash).
func NewToken() (token, id string) {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // never fails
	token = "edg_" + base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token)[:12]
}

// admin wraps an admin handler with the Bearer token check (constant time).
func (s *Server) admin(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		want := sha256.Sum256([]byte(s.o.adminToken))
		have := sha256.Sum256([]byte(got))
		if !ok || s.o.adminToken == "" || subtle.ConstantTimeCompare(want[:], have[:]) != 1 {
			s.fail(w, r, api.Errorf(http.StatusUnauthorized, "unauthorized", "the admin API needs the admin token (Authorization: Bearer …)"))
			return
		}
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	}
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	req, err := api.Decode[api.TokenCreateRequest](http.MaxBytesReader(w, r.Body, api.MaxAdminBytes), api.MaxAdminBytes)
	if err != nil {
		return err
	}
	now := s.o.now()
	token, id := NewToken()
	t := store.Token{ID: id, Hash: HashToken(token), CreatedAt: now, ExpiresAt: now.Add(time.Duration(req.TTLSeconds) * time.Second), Uses: req.Uses, Labels: req.Labels}
	if req.Role != nil {
		t.Role = *req.Role
	} else {
		t.Role = api.Role{Kind: api.RoleServer}
	}
	if err := s.store.CreateToken(r.Context(), t); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, api.TokenCreateResponse{Token: token, Info: api.TokenInfo{
		ID: id, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, Uses: t.Uses, UsesLeft: t.Uses, Labels: t.Labels, Role: t.Role}})
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	toks, err := s.store.Tokens(r.Context())
	if err != nil {
		return err
	}
	if toks == nil {
		toks = []api.TokenInfo{}
	}
	writeJSON(w, http.StatusOK, toks)
	return nil
}

// revokeToken revokes an enrollment token: devices enrolled with it keep working, new
// enrollments with it are refused (revoked_token). Revoking again answers the same token.
func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	t, err := s.store.RevokeToken(r.Context(), id, s.o.now())
	if errors.Is(err, store.ErrNotFound) {
		return api.Errorf(http.StatusNotFound, "not_found", "no enrollment token with ID %q (edgeimg fleet token list shows the IDs)", id)
	}
	if err != nil {
		return err
	}
	s.o.log.Info("enrollment token revoked", "token", t.ID, "at", t.RevokedAt)
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) error {
	f := store.DeviceFilter{State: r.URL.Query().Get("state")}
	for _, l := range r.URL.Query()["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return api.Errorf(http.StatusBadRequest, "bad_request", "label filter %q: want KEY=VALUE", l)
		}
		if f.Labels == nil {
			f.Labels = map[string]string{}
		}
		f.Labels[k] = v
	}
	devs, err := s.store.Devices(r.Context(), f)
	if err != nil {
		return err
	}
	if devs == nil {
		devs = []api.Device{}
	}
	writeJSON(w, http.StatusOK, devs)
	return nil
}

func (s *Server) showDevice(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	d, err := s.store.Device(r.Context(), id)
	if err != nil {
		return fmt.Errorf("device %s: %w", id, err)
	}
	hbs, err := s.store.Heartbeats(r.Context(), id, store.HeartbeatHistory)
	if err != nil {
		return err
	}
	evs, err := s.store.Events(r.Context(), id, 100)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.DeviceDetail{Device: d, Heartbeats: hbs, Events: evs})
	return nil
}

func (s *Server) labelDevice(w http.ResponseWriter, r *http.Request) error {
	req, err := api.Decode[api.LabelRequest](http.MaxBytesReader(w, r.Body, api.MaxAdminBytes), api.MaxAdminBytes)
	if err != nil {
		return err
	}
	d, err := s.store.Label(r.Context(), r.PathValue("id"), req.Set, req.Remove, s.o.now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) revokeDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := s.store.Revoke(r.Context(), r.PathValue("id"), s.o.now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) resetDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := s.store.RequestReset(r.Context(), r.PathValue("id"), s.o.now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *Server) roleDevice(w http.ResponseWriter, r *http.Request) error {
	role, err := api.Decode[api.Role](http.MaxBytesReader(w, r.Body, api.MaxAdminBytes), api.MaxAdminBytes)
	if err != nil {
		return err
	}
	d, err := s.store.SetRole(r.Context(), r.PathValue("id"), *role, s.o.now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

// devicesCollector reports the devices by state at scrape time.
type devicesCollector struct{ st store.Store }

var devicesDesc = prometheus.NewDesc("edgeimg_fleet_devices", "Devices by state.", []string{"state"}, nil)

func (devicesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- devicesDesc }

func (c devicesCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := c.st.CountByState(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(devicesDesc, err)
		return
	}
	for _, st := range []string{api.StateActive, api.StateReset, api.StateRevoked} {
		ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(counts[st]), st)
	}
}

// batchStatser is a store that group-commits heartbeats (store.SQL).
type batchStatser interface{ BatchStats() store.BatchStats }

// batchCollector reports the heartbeats' group commit: the mean batch size is
// rate(edgeimg_fleet_heartbeats_batched_total) / rate(edgeimg_fleet_heartbeat_batches_total).
type batchCollector struct{ st batchStatser }

var (
	batchesDesc = prometheus.NewDesc("edgeimg_fleet_heartbeat_batches_total", "Transactions that wrote heartbeats (group commit).", nil, nil)
	batchedDesc = prometheus.NewDesc("edgeimg_fleet_heartbeats_batched_total", "Heartbeats written by those transactions.", nil, nil)
)

func (batchCollector) Describe(ch chan<- *prometheus.Desc) { ch <- batchesDesc; ch <- batchedDesc }

func (c batchCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.st.BatchStats()
	ch <- prometheus.MustNewConstMetric(batchesDesc, prometheus.CounterValue, float64(st.Batches))
	ch <- prometheus.MustNewConstMetric(batchedDesc, prometheus.CounterValue, float64(st.Heartbeats))
}
