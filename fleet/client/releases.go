package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/edgeimg/edgeimg/fleet/api"
)

const pathAdminReleases = "/v1/admin/releases"

// PushRelease uploads a bundle of size bytes read from r (streamed, never held in memory)
// and returns the release the server stored. The upload is bounded by ctx only, not by the
// client's per-request timeout, as a bundle can take minutes to send.
func (a *Admin) PushRelease(ctx context.Context, r io.Reader, size int64) (*api.ReleaseInfo, error) {
	if size <= 0 || size > api.MaxBundleBytes {
		return nil, fmt.Errorf("bundle of %d bytes: want 1 to %d", size, int64(api.MaxBundleBytes))
	}
	if r == nil {
		return nil, errors.New("no bundle to push")
	}
	hc := *a.http
	hc.Timeout = 0
	var out api.ReleaseInfo
	if err := a.send(ctx, &hc, http.MethodPost, pathAdminReleases, io.NopCloser(r), "application/octet-stream", size, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Releases lists the stored releases.
func (a *Admin) Releases(ctx context.Context) ([]api.ReleaseInfo, error) {
	var out []api.ReleaseInfo
	return out, a.do(ctx, http.MethodGet, pathAdminReleases, nil, &out)
}

// Release returns a stored release.
func (a *Admin) Release(ctx context.Context, version string) (*api.ReleaseInfo, error) {
	var out api.ReleaseInfo
	if err := a.do(ctx, http.MethodGet, releasePath(version, ""), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Rollout starts rolling out a stored release to the devices req selects, in waves.
func (a *Admin) Rollout(ctx context.Context, version string, req api.RolloutRequest) (*api.RolloutStatus, error) {
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("rollout of %s: %w", version, err)
	}
	return a.rollout(ctx, http.MethodPost, version, "", req)
}

// RolloutStatus returns the state of a release's rollout.
func (a *Admin) RolloutStatus(ctx context.Context, version string) (*api.RolloutStatus, error) {
	return a.rollout(ctx, http.MethodGet, version, "", nil)
}

// PauseRollout stops a rollout from targeting further devices; devices already told to
// update go on.
func (a *Admin) PauseRollout(ctx context.Context, version string) (*api.RolloutStatus, error) {
	return a.rollout(ctx, http.MethodPost, version, "/pause", nil)
}

// ResumeRollout resumes a paused or halted rollout.
func (a *Admin) ResumeRollout(ctx context.Context, version string) (*api.RolloutStatus, error) {
	return a.rollout(ctx, http.MethodPost, version, "/resume", nil)
}

// AbortRollout ends a rollout: devices not yet updated keep their release.
func (a *Admin) AbortRollout(ctx context.Context, version string) (*api.RolloutStatus, error) {
	return a.rollout(ctx, http.MethodPost, version, "/abort", nil)
}

func (a *Admin) rollout(ctx context.Context, method, version, action string, body any) (*api.RolloutStatus, error) {
	var out api.RolloutStatus
	if err := a.do(ctx, method, releasePath(version, "/rollout"+action), body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func releasePath(version, suffix string) string {
	return pathAdminReleases + "/" + url.PathEscape(version) + suffix
}
