package client

import (
	"context"
	"net/http"

	"github.com/edgeimg/edgeimg/fleet/api"
)

// DashboardLink makes a one-time login link for the dashboard; its URL is filled in from the
// client's base URL when the server does not know its public URL.
func (a *Admin) DashboardLink(ctx context.Context) (*api.DashboardLink, error) {
	var out api.DashboardLink
	if err := a.do(ctx, http.MethodPost, api.PathDashboardLinks, nil, &out); err != nil {
		return nil, err
	}
	if out.URL == "" {
		out.URL = a.base + out.Path
	}
	return &out, nil
}
