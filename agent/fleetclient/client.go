package fleetclient

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
	"strings"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
)

// Client talks to the fleet server.
type Client struct {
	base   string
	now    func() time.Time
	anon   *http.Client // no client certificate: enrollment with a token
	mtls   *http.Client // the device certificate
	maxRsp int64
}

// New returns a client of the fleet at baseURL that trusts only caPEM. now is the clock used
// to check the server's certificate (see the daemon for the build-epoch floor); cert returns the
// device certificate for mTLS requests (nil before enrollment).
func New(baseURL string, caPEM []byte, now func() time.Time, cert func() *tls.Certificate) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("fleet URL %q: want https://HOST[:PORT]", baseURL)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("the fleet CA holds no PEM certificate")
	}
	mk := func(withCert bool) *http.Client {
		conf := &tls.Config{RootCAs: roots, Time: now, MinVersion: tls.VersionTLS12}
		if withCert {
			conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if c := cert(); c != nil {
					return c, nil
				}
				return &tls.Certificate{}, nil
			}
		}
		return &http.Client{
			Transport: &http.Transport{TLSClientConfig: conf, Proxy: http.ProxyFromEnvironment, TLSHandshakeTimeout: 15 * time.Second,
				ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: 90 * time.Second, MaxIdleConns: 2},
			Timeout: 60 * time.Second,
		}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), now: now, anon: mk(false), mtls: mk(true), maxRsp: 1 << 20}, nil
}

// Error is a refusal by the server.
type Error struct {
	Status int
	Code   string
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("the fleet refused: %d %s: %s", e.Status, e.Code, e.Reason)
}

// Temporary reports whether trying again later may succeed without a change on either side
// (rate limits and server errors).
func (e *Error) Temporary() bool { return e.Status == http.StatusTooManyRequests || e.Status >= 500 }

// ClockError says the server's certificate is not valid yet by the device's clock: the clock
// is behind (the Pi has no real-time clock), not the certificate wrong.
type ClockError struct {
	NotBefore, Now time.Time
}

func (e *ClockError) Error() string {
	return fmt.Sprintf("the fleet server's certificate is valid from %s but this device's clock says %s: the clock is behind (no time from the network yet); trying again later",
		e.NotBefore.UTC().Format(time.RFC3339), e.Now.UTC().Format(time.RFC3339))
}

func (c *Client) post(ctx context.Context, hc *http.Client, path string, in, out api.Validator) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return c.classify(path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e api.Error
		if json.Unmarshal(data, &e) != nil || e.Code == "" {
			e = api.Error{Code: "http", Error: strings.TrimSpace(string(data))}
		}
		return &Error{Status: resp.StatusCode, Code: e.Code, Reason: e.Error}
	}
	if err := decodeInto(resp.Body, c.maxRsp, out); err != nil {
		return fmt.Errorf("POST %s: the answer: %w", path, err)
	}
	return nil
}

func decodeInto(r io.Reader, limit int64, out api.Validator) error {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return err
	}
	if int64(len(data)) > limit {
		return fmt.Errorf("larger than %d bytes", limit)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return err
	}
	return out.Validate()
}

// classify turns a "certificate not yet valid" failure into a ClockError.
func (c *Client) classify(path string, err error) error {
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		var inv x509.CertificateInvalidError
		if errors.As(cve.Err, &inv) && inv.Reason == x509.Expired && len(cve.UnverifiedCertificates) > 0 {
			now := c.now()
			for _, cert := range cve.UnverifiedCertificates {
				if now.Before(cert.NotBefore) {
					return &ClockError{NotBefore: cert.NotBefore, Now: now}
				}
			}
		}
	}
	return fmt.Errorf("POST %s: %w", path, err)
}

// Enroll enrolls; with a token it sends no client certificate, without one it proves the
// device's enrolled key with its certificate.
func (c *Client) Enroll(ctx context.Context, req api.EnrollRequest) (*api.EnrollResponse, error) {
	hc := c.anon
	if req.Token == "" {
		hc = c.mtls
	}
	var out api.EnrollResponse
	if err := c.post(ctx, hc, api.PathEnroll, &req, &out); err != nil {
		return nil, err
	}
	if out.DeviceID != req.DeviceID {
		return nil, fmt.Errorf("the fleet enrolled %q, not this device %q", out.DeviceID, req.DeviceID)
	}
	return &out, nil
}

// Renew asks for a new certificate for the same key.
func (c *Client) Renew(ctx context.Context, csr string) (*api.RenewResponse, error) {
	var out api.RenewResponse
	if err := c.post(ctx, c.mtls, api.PathRenew, &api.RenewRequest{CSR: csr}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Heartbeat reports and returns the desired state.
func (c *Client) Heartbeat(ctx context.Context, hb api.Heartbeat) (*api.HeartbeatResponse, error) {
	var out api.HeartbeatResponse
	if err := c.post(ctx, c.mtls, api.PathHeartbeat, &hb, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CloseIdle closes idle connections (after a renewal, so the next request uses the new certificate).
func (c *Client) CloseIdle() {
	c.anon.CloseIdleConnections()
	c.mtls.CloseIdleConnections()
}

// BaseURL returns the fleet server's URL.
func (c *Client) BaseURL() string { return c.base }

// Downloads returns an HTTP client for the fleet's release routes: the device certificate
// (mTLS) and the fleet CA like the other requests, but no overall deadline, since a bundle
// download can take long (the transport still bounds the handshake and the wait for headers).
func (c *Client) Downloads() *http.Client {
	return &http.Client{Transport: c.mtls.Transport}
}
