package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/fleet/api"
)

// TestReleaseRoutes checks the methods, paths and bodies the release calls send, and that an
// error answer comes back as an *Error with the server's code and message.
func TestReleaseRoutes(t *testing.T) {
	bundle := bytes.Repeat([]byte("bundle!"), 1<<16)
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.EscapedPath())
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.Method + " " + r.URL.EscapedPath() {
		case "POST /v1/admin/releases":
			b, _ := io.ReadAll(r.Body)
			if r.Header.Get("Content-Type") != "application/octet-stream" || r.ContentLength != int64(len(bundle)) || !bytes.Equal(b, bundle) {
				t.Errorf("push: content type %q, length %d, %d bytes", r.Header.Get("Content-Type"), r.ContentLength, len(b))
			}
			json.NewEncoder(w).Encode(api.ReleaseInfo{Version: "2", Size: int64(len(b)), Chunks: 3})
		case "GET /v1/admin/releases":
			json.NewEncoder(w).Encode([]api.ReleaseInfo{{Version: "1"}, {Version: "2"}})
		case "GET /v1/admin/releases/2":
			json.NewEncoder(w).Encode(api.ReleaseInfo{Version: "2"})
		case "POST /v1/admin/releases/2/rollout":
			var req api.RolloutRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Selector["site"] != "berlin" || len(req.Waves) != 3 || req.MaxFailures != 2 {
				t.Errorf("rollout body %+v %v", req, err)
			}
			json.NewEncoder(w).Encode(api.RolloutStatus{Version: "2", State: api.RolloutRunning, Waves: req.Waves})
		case "GET /v1/admin/releases/2/rollout":
			json.NewEncoder(w).Encode(api.RolloutStatus{Version: "2", State: api.RolloutRunning})
		case "POST /v1/admin/releases/2/rollout/pause":
			json.NewEncoder(w).Encode(api.RolloutStatus{Version: "2", State: api.RolloutPaused})
		case "POST /v1/admin/releases/2/rollout/resume":
			json.NewEncoder(w).Encode(api.RolloutStatus{Version: "2", State: api.RolloutRunning})
		case "POST /v1/admin/releases/2/rollout/abort":
			json.NewEncoder(w).Encode(api.RolloutStatus{Version: "2", State: api.RolloutAborted})
		default:
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(api.Error{Error: "release 9 not found", Code: "not_found"})
		}
	}))
	defer srv.Close()
	a, err := NewAdmin(srv.URL, "tok", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	info, err := a.PushRelease(ctx, bytes.NewReader(bundle), int64(len(bundle)))
	if err != nil || info.Version != "2" || info.Size != int64(len(bundle)) {
		t.Fatalf("push: %+v %v", info, err)
	}
	if rs, err := a.Releases(ctx); err != nil || len(rs) != 2 {
		t.Errorf("releases: %v %v", rs, err)
	}
	if r, err := a.Release(ctx, "2"); err != nil || r.Version != "2" {
		t.Errorf("release: %v %v", r, err)
	}
	req := api.RolloutRequest{Selector: map[string]string{"site": "berlin"}, Waves: []float64{5, 25, 100}, MaxFailures: 2}
	if st, err := a.Rollout(ctx, "2", req); err != nil || st.State != api.RolloutRunning || len(st.Waves) != 3 {
		t.Errorf("rollout: %+v %v", st, err)
	}
	for name, call := range map[string]func(context.Context, string) (*api.RolloutStatus, error){
		api.RolloutRunning: a.RolloutStatus, api.RolloutPaused: a.PauseRollout, "resumed": a.ResumeRollout, api.RolloutAborted: a.AbortRollout,
	} {
		st, err := call(ctx, "2")
		want := strings.Replace(name, "resumed", api.RolloutRunning, 1)
		if err != nil || st.State != want {
			t.Errorf("%s: %+v %v", name, st, err)
		}
	}
	_, err = a.Release(ctx, "9")
	var e *Error
	if !errors.As(err, &e) || e.Status != 404 || e.Code != "not_found" || e.Reason != "release 9 not found" {
		t.Errorf("unknown release: %v", err)
	}
	// A bad request never reaches the server.
	n := len(got)
	if _, err := a.Rollout(ctx, "2", api.RolloutRequest{Waves: []float64{50}}); err == nil {
		t.Error("rollout with a last wave of 50%: no error")
	}
	if _, err := a.PushRelease(ctx, bytes.NewReader(nil), 0); err == nil {
		t.Error("push of 0 bytes: no error")
	}
	if len(got) != n {
		t.Errorf("invalid requests were sent: %v", got[n:])
	}
	// A reader shorter than the size it claims fails the upload.
	if _, err := a.PushRelease(ctx, bytes.NewReader(bundle[:10]), int64(len(bundle))); err == nil {
		t.Error("short bundle reader: no error")
	}
}
