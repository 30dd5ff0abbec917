package fleet_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/store/storetest"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

const evilLabel = `<script>document.title="pwned"</script>`

// browser is an HTTP client with a cookie jar that does not follow redirects.
func (e *env) browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	c := e.srv.Client()
	return &http.Client{Transport: c.Transport, Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func fetch(t *testing.T, c *http.Client, method, u string, form url.Values, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (e *env) adminToken(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join(e.dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// loginLink makes a one-time login link through the admin API.
func (e *env) loginLink(t *testing.T) string {
	t.Helper()
	resp, body := fetch(t, e.srv.Client(), "POST", e.srv.URL+api.PathDashboardLinks, nil, map[string]string{"Authorization": "Bearer " + e.adminToken(t)})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("dashboard link: %d %s", resp.StatusCode, body)
	}
	var l api.DashboardLink
	if err := json.Unmarshal([]byte(body), &l); err != nil || !strings.HasPrefix(l.Path, "/login/link?t=") {
		t.Fatalf("dashboard link: %q %v", body, err)
	}
	return e.srv.URL + l.Path
}

func TestDashboardLogin(t *testing.T) {
	e := newEnv(t, storetest.Open(t, "sqlite"))
	b := e.browser(t)
	resp, _ := fetch(t, b, "GET", e.srv.URL+"/", nil, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("GET / without a session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := fetch(t, b, "GET", e.srv.URL+"/login", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="token"`) || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Fatalf("login form: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, body = fetch(t, b, "POST", e.srv.URL+"/login", url.Values{"token": {"wrong"}}, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not the admin token") || len(resp.Cookies()) != 0 {
		t.Errorf("wrong token: %d %v", resp.StatusCode, resp.Cookies())
	}
	// A cross-site form post is refused before the token is even looked at.
	resp, _ = fetch(t, b, "POST", e.srv.URL+"/login", url.Values{"token": {e.adminToken(t)}}, map[string]string{"Sec-Fetch-Site": "cross-site"})
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("cross-site login: %d %v", resp.StatusCode, resp.Cookies())
	}
	resp, _ = fetch(t, b, "POST", e.srv.URL+"/login", url.Values{"token": {e.adminToken(t)}}, map[string]string{"Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d %v", resp.StatusCode, resp.Cookies())
	}
	c := resp.Cookies()[0]
	if c.Name != fleet.SessionCookie || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" || c.MaxAge != int(fleet.SessionTTL/time.Second) {
		t.Errorf("session cookie: %+v", c)
	}
	resp, body = fetch(t, b, "GET", e.srv.URL+"/", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "Fleet at a glance") {
		t.Fatalf("GET / with a session: %d %s", resp.StatusCode, body)
	}
	// A forged or altered cookie is refused.
	for _, v := range []string{c.Value + "x", "AAAAAAAAAAA." + strings.SplitN(c.Value, ".", 2)[1], "garbage", ""} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/", nil)
		req.AddCookie(&http.Cookie{Name: fleet.SessionCookie, Value: v})
		r, err := e.browser(t).Transport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusSeeOther {
			t.Errorf("cookie %q: %d", v, r.StatusCode)
		}
	}
	// A session made with another admin token is refused.
	other := newEnv(t, storetest.Open(t, "sqlite"))
	req, _ := http.NewRequest("GET", other.srv.URL+"/", nil)
	req.AddCookie(c)
	if r, err := other.srv.Client().Transport.RoundTrip(req); err != nil || r.StatusCode != http.StatusSeeOther {
		t.Errorf("another server's session: %v %v", r, err)
	}
	// Sessions expire.
	e.clock.add(fleet.SessionTTL + time.Second)
	if resp, _ := fetch(t, b, "GET", e.srv.URL+"/", nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("expired session: %d", resp.StatusCode)
	}
	// Logging out clears the cookie.
	resp, _ = fetch(t, b, "POST", e.srv.URL+"/logout", url.Values{}, nil)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 || resp.Cookies()[0].MaxAge >= 0 {
		t.Errorf("logout: %d %v", resp.StatusCode, resp.Cookies())
	}

	// Login links: admin-only, single use, short-lived, redirect only to local paths.
	if resp, _ := fetch(t, b, "POST", e.srv.URL+api.PathDashboardLinks, nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("login link without the admin token: %d", resp.StatusCode)
	}
	link := e.loginLink(t)
	resp, _ = fetch(t, b, "GET", link+"&next="+url.QueryEscape("//evil.example/x"), nil, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" || len(resp.Cookies()) != 1 {
		t.Errorf("login link: %d %q %v", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}
	if resp, _ := fetch(t, e.browser(t), "GET", link, nil, nil); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("login link used twice: %d", resp.StatusCode)
	}
	link = e.loginLink(t)
	e.clock.add(fleet.LoginLinkTTL + time.Second)
	if resp, _ := fetch(t, e.browser(t), "GET", link, nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired login link: %d", resp.StatusCode)
	}
	if resp, _ := fetch(t, e.browser(t), "GET", e.loginLink(t)+"&next=/devices/x%3Fa", nil, nil); resp.Header.Get("Location") != "/devices/x?a" {
		t.Errorf("login link next: %q", resp.Header.Get("Location"))
	}
	for _, next := range []string{"https://evil.example/", "/\\evil.example", "//evil.example", "evil", "/%0a//evil.example", "javascript:alert(1)"} {
		resp, _ := fetch(t, e.browser(t), "GET", e.loginLink(t)+"&next="+url.QueryEscape(next), nil, nil)
		loc := resp.Header.Get("Location")
		if !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") || strings.HasPrefix(loc, "/\\") || strings.Contains(loc, "evil.example") && loc != "/%0a/evil.example" {
			t.Errorf("login link next %q: redirected to %q", next, loc)
		}
	}
	if resp, _ := fetch(t, e.browser(t), "GET", e.srv.URL+"/login/link?t=forged.sig", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged login link: %d", resp.StatusCode)
	}
}

// fleetOfFour enrolls four devices through the API: one with a hostile label, one revoked,
// one reset, one relabelled; all heartbeat.
func fleetOfFour(t *testing.T, e *env) {
	t.Helper()
	tok := token(t, e, 10, time.Hour, nil)
	ids := []string{"truck-001", "truck-002", "truck-003", "truck-004"}
	for i, id := range ids {
		d := e.newDev(id)
		status, apiErr, _ := d.enroll(t, tok)
		if status != 200 {
			t.Fatalf("enroll %s: %d %+v", id, status, apiErr)
		}
		c := d.client(true)
		for range i + 1 {
			if status, apiErr, _ := d.heartbeat(t, c); status != 200 {
				t.Fatalf("heartbeat %s: %d %+v", id, status, apiErr)
			}
			e.clock.add(30 * time.Second)
		}
	}
	if _, err := e.admin.Label(ctx, "truck-001", api.LabelRequest{Set: map[string]string{"note": evilLabel}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Label(ctx, "truck-004", api.LabelRequest{Set: map[string]string{"route": "north"}, Remove: []string{"own"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Revoke(ctx, "truck-002"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Reset(ctx, "truck-003"); err != nil {
		t.Fatal(err)
	}
}

func TestDashboardPages(t *testing.T) {
	e := newEnv(t, storetest.Open(t, "sqlite"))
	fleetOfFour(t, e)
	b := e.browser(t)
	if resp, _ := fetch(t, b, "GET", e.loginLink(t), nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	get := func(path string) string {
		t.Helper()
		resp, body := fetch(t, b, "GET", e.srv.URL+path, nil, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		return body
	}
	rows := regexp.MustCompile(`<tr data-id="([^"]+)"`)
	ids := func(body string) string {
		var out []string
		for _, m := range rows.FindAllStringSubmatch(body, -1) {
			out = append(out, m[1])
		}
		return strings.Join(out, " ")
	}
	body := get("/")
	if strings.Contains(body, "<script") || !strings.Contains(body, "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;") {
		t.Errorf("the label is not escaped:\n%s", body)
	}
	for _, want := range []string{`id="count-total"><span class="n">4<`, `id="count-active"><span class="n">2<`, `id="count-reset"><span class="n">1<`, `id="count-revoked"><span class="n">1<`, `<code>v1.0.0</code></a> <span class="n">4<`} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
	for q, want := range map[string]string{
		"":                      "truck-001 truck-002 truck-003 truck-004",
		"?state=revoked":        "truck-002",
		"?label=route%3Dnorth":  "truck-004",
		"?label=own":            "truck-001 truck-002 truck-003",
		"?version=v9":           "",
		"?q=TRUCK-003":          "truck-003",
		"?q=pwned&state=active": "truck-001",
	} {
		if got := ids(get("/" + q)); got != want {
			t.Errorf("filter %q: %q, want %q", q, got, want)
		}
	}
	body = get("/devices/truck-004")
	for _, want := range []string{"labels", "route=north", "enrolled", "4 kept", "every 30s on average", "node ready in 4 of 4"} {
		if !strings.Contains(body, want) {
			t.Errorf("device page lacks %q:\n%s", want, body)
		}
	}
	if body := get("/devices/truck-002"); !strings.Contains(body, `class="event-revoked"`) {
		t.Errorf("device page lacks the revocation:\n%s", body)
	}
	if resp, _ := fetch(t, b, "GET", e.srv.URL+"/devices/nope", nil, nil); resp.StatusCode != 404 {
		t.Errorf("unknown device: %d", resp.StatusCode)
	}
	if body := get("/static/style.css"); !strings.Contains(body, ".cards") {
		t.Errorf("style.css: %q", body)
	}
	// Unknown API routes still answer JSON.
	if resp, body := fetch(t, b, "GET", e.srv.URL+"/v1/nope", nil, nil); resp.StatusCode != 404 || !strings.Contains(body, `"not_found"`) {
		t.Errorf("unknown route: %d %s", resp.StatusCode, body)
	}
}

// chromium runs headless Chromium on url with args and returns its standard output.
func chromium(t *testing.T, profile string, args ...string) string {
	t.Helper()
	bin := testutil.NeedTool(t, "chromium")
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check", "--mute-audio",
		"--ignore-certificate-errors", // the fleet CA is not in Chromium's trust store; the page is on 127.0.0.1
		"--user-data-dir=" + profile}
	cmd := exec.Command(bin, append(base, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+profile)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

func TestDashboardChromium(t *testing.T) {
	testutil.NeedTool(t, "chromium")
	e := newEnv(t, storetest.Open(t, "sqlite"))
	fleetOfFour(t, e)
	tmp := t.TempDir()
	profile := filepath.Join(tmp, "profile")

	// Without a session Chromium lands on the login form.
	dom := chromium(t, profile, "--dump-dom", e.srv.URL+"/")
	if !strings.Contains(dom, `name="token"`) {
		t.Fatalf("no login form without a session:\n%s", dom)
	}
	// A login link sets the session cookie and redirects to the overview.
	dom = chromium(t, profile, "--dump-dom", e.loginLink(t))
	for _, want := range []string{`id="count-total"><span class="n">4<`, `id="count-revoked"><span class="n">1<`, `<tr data-id="truck-003"`,
		"&lt;script&gt;document.title=\"pwned\"&lt;/script&gt;", "<title>Fleet · edgeimg fleet</title>"} {
		if !strings.Contains(dom, want) {
			t.Errorf("overview DOM lacks %q", want)
		}
	}
	if strings.Contains(dom, "<script") || strings.Contains(dom, "<title>pwned") {
		t.Errorf("the hostile label became markup:\n%s", dom)
	}
	// The device page, with its history.
	dom = chromium(t, profile, "--dump-dom", e.loginLink(t)+"&next=/devices/truck-001")
	for _, want := range []string{`<code id="device-id">truck-001</code>`, `class="event-enrolled"`, `class="event-labels"`, "node ready in 1 of 1"} {
		if !strings.Contains(dom, want) {
			t.Errorf("device DOM lacks %q:\n%s", want, dom)
		}
	}
	// Screenshots (EDGEIMG_DASHBOARD_SCREENSHOTS=DIR keeps them).
	for name, next := range map[string]string{"overview.png": "/", "device.png": "/devices/truck-001"} {
		png := filepath.Join(tmp, name)
		chromium(t, profile, "--window-size=1280,900", "--hide-scrollbars", "--screenshot="+png, e.loginLink(t)+"&next="+next)
		data, err := os.ReadFile(png)
		if err != nil || len(data) < 8 || string(data[1:4]) != "PNG" {
			t.Fatalf("screenshot %s: %v (%d bytes)", name, err, len(data))
		}
		if dst := os.Getenv("EDGEIMG_DASHBOARD_SCREENSHOTS"); dst != "" {
			_ = os.WriteFile(filepath.Join(dst, name), data, 0o644)
		}
	}
}
