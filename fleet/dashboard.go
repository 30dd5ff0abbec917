package fleet

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/store"
)

// The dashboard is read-only HTML, server-rendered with html/template (contextual escaping:
// device labels, host names and heartbeat errors are untrusted input), with no JavaScript.
//
// Authentication: a browser logs in by posting the admin token to /login, or by opening a
// one-time login link made through the admin API (POST /v1/admin/dashboard-links, see
// `edgeimg fleet dashboard`). Either sets a session cookie: __Host- prefixed, HttpOnly,
// Secure, SameSite=Strict, holding its expiry and an HMAC-SHA256 of it under a key derived
// from the admin token (so replicas sharing the token accept each other's sessions, and
// changing the token ends every session). POSTs (login, logout) are also checked by
// http.CrossOriginProtection (Sec-Fetch-Site / Origin), and every page forbids framing and
// scripts by its Content-Security-Policy.

// SessionCookie is the name of the dashboard's session cookie.
const SessionCookie = "__Host-edgeimg_session"

// Dashboard lifetimes.
const (
	SessionTTL   = 12 * time.Hour
	LoginLinkTTL = 2 * time.Minute
)

// maxTableRows is how many devices the table shows at most; the filters narrow it down.
const maxTableRows = 500

//go:embed web
var webFS embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"ago":    ago,
	"stamp":  func(t time.Time) string { return stamp(t) },
	"mib":    func(n uint64) uint64 { return n >> 20 },
	"mib64":  func(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) },
	"inc":    func(i int) int { return i + 1 },
	"labels": labelList,
	"pct": func(a, b uint64) string {
		if b == 0 {
			return "–"
		}
		return strconv.FormatUint(a*100/b, 10) + "%"
	},
}).ParseFS(webFS, "web/*.html"))

// loginLinks remembers the nonces of login links already used (until they expire).
type loginLinks struct {
	mu   sync.Mutex
	used map[string]time.Time
}

func (l *loginLinks) use(nonce string, expires, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, exp := range l.used {
		if now.After(exp) {
			delete(l.used, k)
		}
	}
	if _, ok := l.used[nonce]; ok {
		return false
	}
	l.used[nonce] = expires
	return true
}

func (s *Server) routeDashboard() {
	s.links = &loginLinks{used: map[string]time.Time{}}
	s.loginLimiter = newLimiter(1, 10)
	cop := http.NewCrossOriginProtection()
	s.mux.HandleFunc("GET /{$}", s.page(s.overview))
	s.mux.HandleFunc("GET /devices/{id}", s.page(s.devicePage))
	s.mux.HandleFunc("GET /releases", s.page(s.releasesPage))
	s.mux.HandleFunc("GET /login", s.loginForm)
	s.mux.Handle("POST /login", cop.Handler(http.HandlerFunc(s.login)))
	s.mux.HandleFunc("GET /login/link", s.loginLink)
	s.mux.Handle("POST /logout", cop.Handler(http.HandlerFunc(s.logout)))
	static, _ := fs.Sub(webFS, "web")
	s.mux.Handle("GET /static/style.css", http.StripPrefix("/static/", http.FileServerFS(static)))
	s.mux.HandleFunc("POST "+api.PathDashboardLinks, s.admin(s.createLoginLink))
}

func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// sessionKey derives the HMAC key of sessions and login links from the admin token.
func (s *Server) sessionKey() []byte {
	m := hmac.New(sha256.New, []byte(s.o.adminToken))
	m.Write([]byte("edgeimg dashboard v1"))
	return m.Sum(nil)
}

// sign returns base64(payload) "." base64(HMAC(purpose, payload)).
func (s *Server) sign(purpose string, payload []byte) string {
	m := hmac.New(sha256.New, s.sessionKey())
	m.Write([]byte(purpose + "\x00"))
	m.Write(payload)
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// verify checks a value made by sign and returns its payload.
func (s *Server) verify(purpose, v string) ([]byte, bool) {
	p, sig, ok := strings.Cut(v, ".")
	if !ok || len(v) > 512 {
		return nil, false
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p)
	mac, err2 := base64.RawURLEncoding.DecodeString(sig)
	if err1 != nil || err2 != nil {
		return nil, false
	}
	m := hmac.New(sha256.New, s.sessionKey())
	m.Write([]byte(purpose + "\x00"))
	m.Write(payload)
	return payload, hmac.Equal(mac, m.Sum(nil))
}

// expiring is a payload of 8 bytes of expiry (Unix seconds) and a random nonce.
func expiring(exp time.Time) []byte {
	b := make([]byte, 8, 24)
	binary.BigEndian.PutUint64(b, uint64(exp.Unix()))
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	return append(b, nonce...)
}

func expiry(payload []byte) (time.Time, bool) {
	if len(payload) != 24 {
		return time.Time{}, false
	}
	return time.Unix(int64(binary.BigEndian.Uint64(payload[:8])), 0), true
}

// loggedIn reports whether r carries a valid session cookie or the admin token as Bearer.
func (s *Server) loggedIn(r *http.Request) bool {
	if s.o.adminToken == "" {
		return false
	}
	if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return s.isAdminToken(got)
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return false
	}
	payload, ok := s.verify("session", c.Value)
	if !ok {
		return false
	}
	exp, ok := expiry(payload)
	return ok && s.o.now().Before(exp)
}

func (s *Server) isAdminToken(got string) bool {
	want := sha256.Sum256([]byte(s.o.adminToken))
	have := sha256.Sum256([]byte(got))
	return s.o.adminToken != "" && subtle.ConstantTimeCompare(want[:], have[:]) == 1
}

func (s *Server) setSession(w http.ResponseWriter) {
	exp := s.o.now().Add(SessionTTL)
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: s.sign("session", expiring(exp)), Path: "/",
		Expires: exp, MaxAge: int(SessionTTL / time.Second), HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// page wraps a dashboard page: security headers, and the login page for a visitor without a session.
func (s *Server) page(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w)
		if !s.loggedIn(r) {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		if err := h(w, r); err != nil {
			s.o.log.Error("dashboard", "path", r.URL.Path, "err", err)
			w.WriteHeader(http.StatusInternalServerError)
			_ = pages.ExecuteTemplate(w, "error.html", map[string]any{"Title": "Error", "Message": "The fleet store did not answer; see the server's log."})
		}
	}
}

func (s *Server) render(w http.ResponseWriter, status int, name string, data map[string]any) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var b strings.Builder
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		return fmt.Errorf("rendering %s: %w", name, err)
	}
	w.WriteHeader(status)
	_, err := w.Write([]byte(b.String()))
	return err
}

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	s.loginPage(w, http.StatusOK, "")
}

func (s *Server) loginPage(w http.ResponseWriter, status int, msg string) {
	_ = s.render(w, status, "login.html", map[string]any{"Title": "Log in", "Error": msg, "NoLogout": true})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	if !s.loginLimiter.allow(clientIP(r), s.o.now()) {
		w.Header().Set("Retry-After", "1")
		s.loginPage(w, http.StatusTooManyRequests, "Too many attempts: wait a little.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil || !s.isAdminToken(strings.TrimSpace(r.PostForm.Get("token"))) {
		s.loginPage(w, http.StatusUnauthorized, "That is not the admin token.")
		return
	}
	s.setSession(w)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// loginLink logs in with a one-time link: valid for LoginLinkTTL, once per server process.
func (s *Server) loginLink(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	now := s.o.now()
	payload, ok := s.verify("link", r.URL.Query().Get("t"))
	exp, okExp := expiry(payload)
	if !ok || !okExp || !now.Before(exp) || !s.links.use(string(payload), exp, now) {
		s.loginPage(w, http.StatusUnauthorized, "That login link is invalid, expired or already used.")
		return
	}
	s.setSession(w)
	http.Redirect(w, r, localPath(r.URL.Query().Get("next")), http.StatusSeeOther)
}

// localPath returns p when it is a path on this server ("/devices/x"), else "/": a login
// link never redirects elsewhere.
func localPath(p string) string {
	u, err := url.Parse(p)
	if err != nil || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\\x00") || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return u.RequestURI()
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (s *Server) createLoginLink(w http.ResponseWriter, r *http.Request) error {
	exp := s.o.now().Add(LoginLinkTTL)
	l := api.DashboardLink{Path: "/login/link?t=" + url.QueryEscape(s.sign("link", expiring(exp))), ExpiresAt: exp.UTC()}
	if s.o.publicURL != "" {
		l.URL = strings.TrimRight(s.o.publicURL, "/") + l.Path
	}
	writeJSON(w, http.StatusCreated, l)
	return nil
}

// count is a value and how many devices have it.
type count struct {
	Value string
	N     int
	Query string // the overview's query string that filters on it
}

// deviceFilter is the overview's filter, from the query string.
type deviceFilter struct {
	State, Label, Version, Q string
}

func (f deviceFilter) with(key, value string) string {
	v := url.Values{}
	for k, s := range map[string]string{"state": f.State, "label": f.Label, "version": f.Version, "q": f.Q} {
		if s != "" {
			v.Set(k, s)
		}
	}
	v.Set(key, value)
	return "?" + v.Encode()
}

func (f deviceFilter) match(d api.Device) bool {
	if f.State != "" && d.State != f.State {
		return false
	}
	if f.Version != "" && d.Version != f.Version {
		return false
	}
	if f.Label != "" {
		k, v, hasValue := strings.Cut(f.Label, "=")
		got, ok := d.Labels[k]
		if !ok || hasValue && got != v {
			return false
		}
	}
	if q := strings.ToLower(f.Q); q != "" {
		hay := strings.ToLower(d.ID + " " + d.Hostname + " " + labelList(d.Labels) + " " + d.Version + " " + d.Role.String())
		if !strings.Contains(hay, q) {
			return false
		}
	}
	return true
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := deviceFilter{State: q.Get("state"), Label: q.Get("label"), Version: q.Get("version"), Q: q.Get("q")}
	all, err := s.store.Devices(r.Context(), store.DeviceFilter{})
	if err != nil {
		return err
	}
	byState, byVersion := map[string]int{}, map[string]int{}
	var rows []api.Device
	matched := 0
	for _, d := range all {
		byState[d.State]++
		byVersion[cmp.Or(d.Version, "unknown")]++
		if f.match(d) {
			matched++
			if len(rows) < maxTableRows {
				rows = append(rows, d)
			}
		}
	}
	states := []count{}
	for _, st := range []string{api.StateActive, api.StateReset, api.StateRevoked} {
		states = append(states, count{Value: st, N: byState[st], Query: f.with("state", st)})
	}
	versions := []count{}
	for _, v := range slices.Sorted(maps.Keys(byVersion)) {
		versions = append(versions, count{Value: v, N: byVersion[v], Query: f.with("version", v)})
	}
	ros, err := s.store.Rollouts(r.Context())
	if err != nil {
		return err
	}
	var active []api.RolloutStatus // not finished: running, paused or halted
	for _, ro := range ros {
		if ro.State == api.RolloutRunning || ro.State == api.RolloutPaused || ro.State == api.RolloutHalted {
			active = append(active, ro)
		}
	}
	return s.render(w, http.StatusOK, "overview.html", map[string]any{
		"Title": "Fleet", "Rollouts": active, "Total": len(all), "States": states, "Versions": versions, "Filter": f, "Filtered": f != deviceFilter{},
		"Devices": rows, "Matched": matched, "Truncated": matched > len(rows), "Now": s.o.now(),
		"StateNames": []string{api.StateActive, api.StateReset, api.StateRevoked},
	})
}

// hbSummary sums up a device's stored heartbeats.
type hbSummary struct {
	N            int
	First, Last  time.Time
	Ready        int
	WithErrors   int
	MaxMemPct    string
	Versions     string
	MeanInterval string
}

func summarize(hbs []api.HeartbeatRecord) hbSummary {
	sum := hbSummary{N: len(hbs)}
	if len(hbs) == 0 {
		return sum
	}
	sum.Last, sum.First = hbs[0].At, hbs[len(hbs)-1].At
	var maxMem uint64
	var versions []string
	for _, h := range hbs {
		if h.Heartbeat.NodeReady {
			sum.Ready++
		}
		if len(h.Heartbeat.LastErrors) > 0 {
			sum.WithErrors++
		}
		if h.Heartbeat.MemTotal > 0 {
			maxMem = max(maxMem, h.Heartbeat.MemUsed*100/h.Heartbeat.MemTotal)
		}
		if v := h.Heartbeat.Version; v != "" && !slices.Contains(versions, v) {
			versions = append(versions, v)
		}
	}
	sum.MaxMemPct = strconv.FormatUint(maxMem, 10) + "%"
	sum.Versions = strings.Join(versions, ", ")
	if len(hbs) > 1 {
		sum.MeanInterval = (sum.Last.Sub(sum.First) / time.Duration(len(hbs)-1)).Round(time.Second).String()
	}
	return sum
}

func (s *Server) devicePage(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	d, err := s.store.Device(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return s.render(w, http.StatusNotFound, "error.html", map[string]any{"Title": "Not found", "Message": "No device " + id + "."})
	}
	if err != nil {
		return err
	}
	hbs, err := s.store.Heartbeats(r.Context(), id, store.HeartbeatHistory)
	if err != nil {
		return err
	}
	evs, err := s.store.Events(r.Context(), id, 200)
	if err != nil {
		return err
	}
	recent := hbs
	if len(recent) > 10 {
		recent = recent[:10]
	}
	return s.render(w, http.StatusOK, "device.html", map[string]any{
		"Title": "Device " + d.ID, "D": d, "Summary": summarize(hbs), "Recent": recent, "Events": evs, "Now": s.o.now(),
	})
}

func (s *Server) releasesPage(w http.ResponseWriter, r *http.Request) error {
	rels, err := s.store.Releases(r.Context())
	if err != nil {
		return err
	}
	ros, err := s.store.Rollouts(r.Context())
	if err != nil {
		return err
	}
	return s.render(w, http.StatusOK, "releases.html", map[string]any{"Title": "Releases", "Releases": rels, "Rollouts": ros})
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// ago says how long before now t was, in whole seconds, minutes or hours.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "in the future"
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + " s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + " min ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + " h ago"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + " days ago"
}

func labelList(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}
