package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/releases"
	"github.com/edgeimg/edgeimg/fleet/store"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// WithReleaseDir sets the directory OTA releases are stored in (package releases). Default:
// none, and pushes are refused.
func WithReleaseDir(dir string) Option { return func(o *options) { o.releaseDir = dir } }

// WithTrustedKeys sets the keys a pushed bundle must be signed with. Default: none, and
// pushes are refused.
func WithTrustedKeys(keys bundle.Keyring) Option { return func(o *options) { o.trusted = keys } }

// WithRolloutInterval sets how often RunRollouts advances the rollouts. Default 2 s.
func WithRolloutInterval(d time.Duration) Option { return func(o *options) { o.rolloutInterval = d } }

func (s *Server) routeReleases() {
	s.mux.HandleFunc("GET "+api.PathReleases+"{version}/manifest", s.deviceRoute(s.serveManifest))
	s.mux.HandleFunc("GET "+api.PathReleases+"{version}/signature", s.deviceRoute(s.serveSignature))
	s.mux.HandleFunc("GET "+api.PathReleases+"{version}/index/{part}", s.deviceRoute(s.serveIndex))
	s.mux.HandleFunc("GET "+api.PathReleases+"{version}/bundle", s.deviceRoute(s.serveBundle))
	s.mux.HandleFunc("GET "+api.PathChunks+"{sha256}", s.deviceRoute(s.serveChunk))
	s.mux.HandleFunc("POST /v1/admin/releases", s.admin(s.pushRelease))
	s.mux.HandleFunc("GET /v1/admin/releases", s.admin(s.listReleases))
	s.mux.HandleFunc("GET /v1/admin/releases/{version}", s.admin(s.showRelease))
	s.mux.HandleFunc("POST /v1/admin/releases/{version}/rollout", s.admin(s.startRollout))
	s.mux.HandleFunc("GET /v1/admin/releases/{version}/rollout", s.admin(s.showRollout))
	s.mux.HandleFunc("POST /v1/admin/releases/{version}/rollout/{action}", s.admin(s.rolloutAction))
}

// deviceRoute wraps a device download: the client certificate of an enrolled, non-revoked
// device with its enrolled key.
func (s *Server) deviceRoute(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, keySum, err := device(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		d, err := s.store.Device(r.Context(), id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			s.fail(w, r, api.Errorf(http.StatusForbidden, "unknown_device", "device %s is not enrolled", id))
			return
		case err != nil:
			s.fail(w, r, err)
			return
		case d.State == api.StateRevoked:
			s.fail(w, r, api.Errorf(http.StatusForbidden, "revoked", "device %s is revoked", id))
			return
		case d.KeySHA256 != keySum:
			s.fail(w, r, api.Errorf(http.StatusForbidden, "key_mismatch", "the certificate's key is not device %s's enrolled key", id))
			return
		}
		if s.rel == nil {
			s.fail(w, r, api.Errorf(http.StatusNotFound, "not_found", "this fleet server stores no releases"))
			return
		}
		if err := h(w, r); err != nil {
			s.fail(w, r, releaseErr(err))
		}
	}
}

// releaseErr maps the release store's errors to answers.
func releaseErr(err error) error {
	var be *bundle.Error
	switch {
	case errors.Is(err, releases.ErrNotFound):
		return api.Errorf(http.StatusNotFound, "not_found", "%v", err)
	case errors.Is(err, releases.ErrConflict):
		return api.Errorf(http.StatusConflict, "conflict", "%v", err)
	case errors.As(err, &be):
		code := http.StatusBadRequest
		if be.Reason == bundle.ErrUnknownKey || be.Reason == bundle.ErrBadSignature {
			code = http.StatusConflict // a good request that this server's keys refuse
		}
		return api.Errorf(code, "bad_bundle", "bundle refused: %v", err)
	}
	return err
}

func immutable(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
}

func (s *Server) serveSmall(w http.ResponseWriter, r *http.Request, name, ctype string) error {
	b, err := s.rel.File(r.PathValue("version"), name)
	if err != nil {
		return err
	}
	immutable(w)
	w.Header().Set("Content-Type", ctype)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	return nil
}

func (s *Server) serveManifest(w http.ResponseWriter, r *http.Request) error {
	return s.serveSmall(w, r, bundle.ManifestFile, "application/json")
}

func (s *Server) serveSignature(w http.ResponseWriter, r *http.Request) error {
	return s.serveSmall(w, r, bundle.SignatureFile, "application/json")
}

func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request) error {
	b, err := s.rel.Index(r.PathValue("version"), r.PathValue("part"))
	if err != nil {
		return err
	}
	immutable(w)
	w.Header().Set("Content-Type", "application/json")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	return nil
}

func (s *Server) serveChunk(w http.ResponseWriter, r *http.Request) error {
	sum := r.PathValue("sha256")
	f, err := s.rel.Chunk(sum)
	if err != nil {
		return err
	}
	defer f.Close()
	immutable(w)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+sum+`"`)
	http.ServeContent(w, r, "", time.Time{}, f)
	return nil
}

func (s *Server) serveBundle(w http.ResponseWriter, r *http.Request) error {
	br, info, err := s.rel.Bundle(r.PathValue("version"))
	if err != nil {
		return err
	}
	defer br.Close()
	// A bundle takes longer than the server's write timeout on a slow link.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	immutable(w)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+info.SHA256+`"`)
	http.ServeContent(w, r, "", time.Time{}, br)
	return nil
}

func (s *Server) pushRelease(w http.ResponseWriter, r *http.Request) error {
	if s.rel == nil {
		return api.Errorf(http.StatusConflict, "conflict", "this fleet server stores no releases (fleet serve --releases DIR)")
	}
	if len(s.o.trusted) == 0 {
		return api.Errorf(http.StatusConflict, "conflict", "this fleet server trusts no signing key (fleet serve --trusted-key FILE)")
	}
	if r.ContentLength > api.MaxBundleBytes {
		return api.Errorf(http.StatusRequestEntityTooLarge, "too_large", "bundle of %d bytes, at most %d", r.ContentLength, int64(api.MaxBundleBytes))
	}
	// The body streams for as long as it takes: no read or write deadline (a write deadline
	// that passes during the upload loses the answer, or resets an HTTP/2 stream), no admin
	// body limit.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	body := http.MaxBytesReader(w, r.Body, api.MaxBundleBytes)
	info, err := s.rel.Put(r.Context(), body, s.o.trusted, s.o.now())
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return api.Errorf(http.StatusRequestEntityTooLarge, "too_large", "bundle larger than %d bytes", int64(api.MaxBundleBytes))
	}
	if err != nil {
		return releaseErr(err)
	}
	if err := s.store.PutRelease(r.Context(), info); err != nil {
		return err
	}
	s.o.log.Info("release pushed", "version", info.Version, "sha256", info.SHA256, "new_bytes", info.NewBytes)
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *Server) listReleases(w http.ResponseWriter, r *http.Request) error {
	rels, err := s.store.Releases(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rels)
	return nil
}

func (s *Server) showRelease(w http.ResponseWriter, r *http.Request) error {
	rel, err := s.store.Release(r.Context(), r.PathValue("version"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rel)
	return nil
}

func (s *Server) startRollout(w http.ResponseWriter, r *http.Request) error {
	req, err := api.Decode[api.RolloutRequest](http.MaxBytesReader(w, r.Body, api.MaxAdminBytes), api.MaxAdminBytes)
	if err != nil {
		return err
	}
	version := r.PathValue("version")
	if _, err := s.store.StartRollout(r.Context(), version, *req, s.o.now()); err != nil {
		return err
	}
	return s.answerRollout(w, r, version)
}

// answerRollout advances the rollouts (an admin action may let one move on) and answers
// the rollout's status.
func (s *Server) answerRollout(w http.ResponseWriter, r *http.Request, version string) error {
	if _, err := s.AdvanceRollouts(r.Context()); err != nil {
		return err
	}
	st, err := s.store.Rollout(r.Context(), version)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) showRollout(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store.Rollout(r.Context(), r.PathValue("version"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) rolloutAction(w http.ResponseWriter, r *http.Request) error {
	action := r.PathValue("action")
	if action != "pause" && action != "resume" && action != "abort" {
		return api.Errorf(http.StatusNotFound, "not_found", "no rollout action %q: pause, resume or abort", action)
	}
	version := r.PathValue("version")
	if _, err := s.store.RolloutAction(r.Context(), version, action, s.o.now()); err != nil {
		return err
	}
	return s.answerRollout(w, r, version)
}

// AdvanceRollouts takes one step of every running rollout now (store.Store.AdvanceRollouts)
// and returns the number of steps taken.
func (s *Server) AdvanceRollouts(ctx context.Context) (int, error) {
	n, err := s.store.AdvanceRollouts(ctx, s.o.now())
	if err != nil {
		return n, fmt.Errorf("advancing rollouts: %w", err)
	}
	return n, nil
}

// RunRollouts advances the rollouts every rollout interval until ctx ends. Every replica of
// the fleet server runs it; the store lets one advance at a time.
func (s *Server) RunRollouts(ctx context.Context) {
	t := time.NewTicker(s.o.rolloutInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.AdvanceRollouts(ctx); err != nil && ctx.Err() == nil {
				s.o.log.Error("rollouts", "err", err)
			}
		}
	}
}

// rolloutCollector reports the rollouts and releases at scrape time.
type rolloutCollector struct{ s *Server }

var (
	rolloutStateDesc   = prometheus.NewDesc("edgeimg_fleet_rollout_state", "Rollouts by release and state (1 for the rollout's state).", []string{"version", "state"}, nil)
	rolloutDevicesDesc = prometheus.NewDesc("edgeimg_fleet_rollout_devices", "Devices of a rollout by status: targeted, committed, failed, pending.", []string{"version", "status"}, nil)
	rolloutWaveDesc    = prometheus.NewDesc("edgeimg_fleet_rollout_wave", "Current wave of a rollout (1-based).", []string{"version"}, nil)
	releasesDesc       = prometheus.NewDesc("edgeimg_fleet_releases", "Releases stored.", nil, nil)
)

func (rolloutCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- rolloutStateDesc
	ch <- rolloutDevicesDesc
	ch <- rolloutWaveDesc
	ch <- releasesDesc
}

func (c rolloutCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rels, err := c.s.store.Releases(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(releasesDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(releasesDesc, prometheus.GaugeValue, float64(len(rels)))
	ros, err := c.s.store.Rollouts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(rolloutStateDesc, err)
		return
	}
	for _, ro := range ros {
		for _, st := range []string{api.RolloutRunning, api.RolloutPaused, api.RolloutHalted, api.RolloutAborted, api.RolloutCompleted} {
			v := 0.0
			if ro.State == st {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(rolloutStateDesc, prometheus.GaugeValue, v, ro.Version, st)
		}
		for status, n := range map[string]int{"targeted": ro.Targeted, "committed": ro.Committed, "failed": ro.Failed, "pending": ro.Pending} {
			ch <- prometheus.MustNewConstMetric(rolloutDevicesDesc, prometheus.GaugeValue, float64(n), ro.Version, status)
		}
		ch <- prometheus.MustNewConstMetric(rolloutWaveDesc, prometheus.GaugeValue, float64(ro.Wave+1), ro.Version)
	}
}
