package api

import "time"

// PathDashboardLinks is the admin route (POST) that makes a one-time login link for the
// dashboard.
const PathDashboardLinks = "/v1/admin/dashboard-links"

// DashboardLink is the answer of POST /v1/admin/dashboard-links: a link that logs a browser in
// to the dashboard once, until ExpiresAt.
type DashboardLink struct {
	// Path is the link's path and query, relative to the server's URL.
	Path string `json:"path"`
	// URL is the whole link when the server knows its public URL (--public-url).
	URL       string    `json:"url,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}
