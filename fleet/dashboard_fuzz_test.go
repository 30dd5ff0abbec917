package fleet_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet"
	"github.com/edgeimg/edgeimg/fleet/pki"
	"github.com/edgeimg/edgeimg/fleet/store/storetest"
)

// FuzzDashboardCredentials feeds arbitrary session cookies, login-link tokens and "next"
// paths to the dashboard: none logs in, and a redirect never leaves the server.
func FuzzDashboardCredentials(f *testing.F) {
	for _, seed := range [][3]string{
		{"", "", ""},
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAA", "x.y", "/"},
		{"..", ".", "//evil.example"},
		{"garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.c2ln", "/\\evil.example"},
		{"\x00", "%zz", "https://evil.example/"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	dir := f.TempDir()
	if err := pki.Init(dir, nil, time.Now()); err != nil {
		f.Fatal(err)
	}
	ca, err := pki.LoadCA(dir+"/"+pki.CAFile, dir+"/"+pki.CAKeyFile)
	if err != nil {
		f.Fatal(err)
	}
	h := fleet.NewServer(storetest.Open(f, "sqlite"), ca, fleet.WithAdminToken("admin-token-for-the-fuzz-test"))
	f.Fuzz(func(t *testing.T, cookie, link, next string) {
		req := httptest.NewRequest("GET", "https://127.0.0.1/", nil)
		req.AddCookie(&http.Cookie{Name: fleet.SessionCookie, Value: url.QueryEscape(cookie)})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login" {
			t.Fatalf("cookie %q: %d %s", cookie, w.Code, w.Header().Get("Location"))
		}
		req = httptest.NewRequest("GET", "https://127.0.0.1/login/link?"+url.Values{"t": {link}, "next": {next}}.Encode(), nil)
		w = httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusUnauthorized || len(w.Result().Cookies()) != 0 {
			t.Fatalf("link %q: %d", link, w.Code)
		}
	})
}
