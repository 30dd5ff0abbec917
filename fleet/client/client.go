package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
)

// Admin calls the admin API with the admin token.
type Admin struct {
	base  string
	token string
	http  *http.Client
}

// Error is an error answer of the server.
type Error struct {
	Status int
	Code   string
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("fleet server: %d %s: %s", e.Status, e.Code, e.Reason)
}

// NewAdmin returns an admin client of the server at baseURL (https://host:port). caPEM, when
// not empty, is the only trust root (the fleet CA); otherwise the system's roots are used.
func NewAdmin(baseURL, token string, caPEM []byte) (*Admin, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("fleet URL %q: want https://HOST[:PORT]", baseURL)
	}
	if token == "" {
		return nil, errors.New("no admin token (--admin-token or EDGEIMG_ADMIN_TOKEN)")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("the fleet CA file holds no PEM certificate")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &Admin{base: strings.TrimRight(baseURL, "/"), token: token, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

func (a *Admin) do(ctx context.Context, method, path string, body, out any) error {
	if body == nil {
		return a.send(ctx, a.http, method, path, nil, "", 0, out)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return a.send(ctx, a.http, method, path, bytes.NewReader(b), "application/json", int64(len(b)), out)
}

// send makes a request with body (of contentType and size bytes; nil: none) and decodes a
// JSON answer into out, or returns the server's error answer as an *Error.
func (a *Admin) send(ctx context.Context, hc *http.Client, method, path string, body io.Reader, contentType string, size int64, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", contentType)
		req.ContentLength = size
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e api.Error
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e = api.Error{Error: strings.TrimSpace(string(data)), Code: http.StatusText(resp.StatusCode)}
		}
		return &Error{Status: resp.StatusCode, Code: e.Code, Reason: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
		}
	}
	return nil
}

// CreateToken creates an enrollment token.
func (a *Admin) CreateToken(ctx context.Context, req api.TokenCreateRequest) (*api.TokenCreateResponse, error) {
	var out api.TokenCreateResponse
	return &out, a.do(ctx, http.MethodPost, "/v1/admin/tokens", req, &out)
}

// Tokens lists the tokens.
func (a *Admin) Tokens(ctx context.Context) ([]api.TokenInfo, error) {
	var out []api.TokenInfo
	return out, a.do(ctx, http.MethodGet, "/v1/admin/tokens", nil, &out)
}

// RevokeToken revokes the enrollment token with ID id (as Tokens lists it); revoking a
// revoked token again answers it unchanged.
func (a *Admin) RevokeToken(ctx context.Context, id string) (*api.TokenInfo, error) {
	var out api.TokenInfo
	return &out, a.do(ctx, http.MethodPost, "/v1/admin/tokens/"+url.PathEscape(id)+"/revoke", nil, &out)
}

// Devices lists devices, filtered by state and labels when given.
func (a *Admin) Devices(ctx context.Context, state string, labels map[string]string) ([]api.Device, error) {
	q := url.Values{}
	if state != "" {
		q.Set("state", state)
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q.Add("label", k+"="+labels[k])
	}
	path := "/v1/admin/devices"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []api.Device
	return out, a.do(ctx, http.MethodGet, path, nil, &out)
}

// Device returns a device with its recent heartbeats and history.
func (a *Admin) Device(ctx context.Context, id string) (*api.DeviceDetail, error) {
	var out api.DeviceDetail
	return &out, a.do(ctx, http.MethodGet, "/v1/admin/devices/"+url.PathEscape(id), nil, &out)
}

// Label sets and removes labels of a device.
func (a *Admin) Label(ctx context.Context, id string, req api.LabelRequest) (*api.Device, error) {
	var out api.Device
	return &out, a.do(ctx, http.MethodPost, "/v1/admin/devices/"+url.PathEscape(id)+"/labels", req, &out)
}

// Revoke revokes a device.
func (a *Admin) Revoke(ctx context.Context, id string) (*api.Device, error) {
	var out api.Device
	return &out, a.do(ctx, http.MethodPost, "/v1/admin/devices/"+url.PathEscape(id)+"/revoke", nil, &out)
}

// Reset orders a device's reset.
func (a *Admin) Reset(ctx context.Context, id string) (*api.Device, error) {
	var out api.Device
	return &out, a.do(ctx, http.MethodPost, "/v1/admin/devices/"+url.PathEscape(id)+"/reset", nil, &out)
}

// SetRole sets a device's desired role.
func (a *Admin) SetRole(ctx context.Context, id string, role api.Role) (*api.Device, error) {
	var out api.Device
	return &out, a.do(ctx, http.MethodPost, "/v1/admin/devices/"+url.PathEscape(id)+"/role", role, &out)
}
