package api

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Paths of the API. Device routes take the device's client certificate (mTLS) except
// enrollment, which takes a token; admin routes take the admin token as a Bearer credential.
const (
	PathEnroll    = "/v1/enroll"
	PathRenew     = "/v1/renew"
	PathHeartbeat = "/v1/heartbeat"
	PathAdmin     = "/v1/admin/"
)

// Body size limits: a request larger than these is refused with 413.
const (
	MaxEnrollBytes    = 64 << 10
	MaxHeartbeatBytes = 64 << 10
	MaxAdminBytes     = 64 << 10
)

// Role kinds.
const (
	RoleServer = "server" // a K3s server (standalone or the first of a cluster)
	RoleAgent  = "agent"  // a K3s agent joining ServerURL with Token
)

// Device states.
const (
	StateActive  = "active"  // enrolled, its certificate works
	StateReset   = "reset"   // a reset is ordered: the next heartbeat tells the device, which re-enrolls
	StateRevoked = "revoked" // its certificate stops working at once; it cannot enroll again
)

// EnrollRequest is the body of POST /v1/enroll.
type EnrollRequest struct {
	// Token is the enrollment token; empty when the device re-enrolls with its certificate.
	Token string `json:"token,omitempty"`
	// DeviceID is the device's stable ID (from its serial number); the CSR's common name.
	DeviceID string `json:"device_id"`
	// CSR is a PEM "CERTIFICATE REQUEST" for the device's key (ed25519 or ECDSA P-256).
	CSR string `json:"csr"`
	// Hostname is the device's host name (device.yaml), or empty.
	Hostname string `json:"hostname,omitempty"`
	// Labels are the device's own labels (device.yaml); the token's labels win on conflict.
	Labels map[string]string `json:"labels,omitempty"`
	// Version is the running software version; Slot the A/B slot booted ("a" or "b").
	Version string `json:"version,omitempty"`
	Slot    string `json:"slot,omitempty"`
}

// Role is what K3s runs as on a device.
type Role struct {
	// Kind is RoleServer or RoleAgent.
	Kind string `json:"kind"`
	// ServerURL is the K3s server an agent joins (https://host:6443); empty for a server.
	ServerURL string `json:"server_url,omitempty"`
	// Token is the K3s join token for an agent; empty for a server.
	Token string `json:"token,omitempty"`
}

// Equal reports whether r and o are the same role. The join token is not compared: rotating it
// does not change what the node is.
func (r Role) Equal(o Role) bool { return r.Kind == o.Kind && r.ServerURL == o.ServerURL }

// String describes the role for messages, without its token.
func (r Role) String() string {
	if r.Kind == RoleAgent {
		return "agent of " + r.ServerURL
	}
	return r.Kind
}

// EnrollResponse is the answer to an enrollment.
type EnrollResponse struct {
	DeviceID string `json:"device_id"`
	// Certificate is the device certificate, PEM (leaf first).
	Certificate string `json:"certificate"`
	// CA is the fleet CA, PEM.
	CA string `json:"ca"`
	// Role is the K3s role assigned to the device.
	Role Role `json:"role"`
	// HeartbeatIntervalSeconds is how often the device reports; 0 keeps the image's setting.
	HeartbeatIntervalSeconds int `json:"heartbeat_interval_seconds,omitempty"`
}

// RenewRequest is the body of POST /v1/renew (mTLS): a CSR for the device's enrolled key.
type RenewRequest struct {
	CSR string `json:"csr"`
}

// RenewResponse carries the renewed certificate.
type RenewResponse struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// Heartbeat is the body of POST /v1/heartbeat (mTLS).
type Heartbeat struct {
	Version string `json:"version,omitempty"`
	Slot    string `json:"slot,omitempty"`
	// Role is the role K3s runs as now (may differ from the desired one when a change was refused).
	Role          string   `json:"role,omitempty"`
	UptimeSeconds int64    `json:"uptime_seconds"`
	NodeReady     bool     `json:"node_ready"`
	NotReadyPods  []string `json:"not_ready_pods,omitempty"` // namespace/name
	MemUsed       uint64   `json:"mem_used"`
	MemTotal      uint64   `json:"mem_total"`
	DiskUsed      uint64   `json:"disk_used"` // of the data partition
	DiskTotal     uint64   `json:"disk_total"`
	LastErrors    []string `json:"last_errors,omitempty"`
	// Update is the state of the device's latest update, when it has had one.
	Update *UpdateStatus `json:"update,omitempty"`
}

// HeartbeatResponse carries the device's desired state.
type HeartbeatResponse struct {
	Desired Desired `json:"desired"`
}

// Desired is the state the fleet wants a device in.
type Desired struct {
	// Version is the software version the device should run (OTA); empty means no change.
	Version string `json:"version,omitempty"`
	// Role is the K3s role the device should have.
	Role Role `json:"role"`
	// Reset orders a factory reset of K3s and the role, then re-enrollment.
	Reset bool `json:"reset,omitempty"`
}

// Error is the body of every error answer.
type Error struct {
	// Error says what was wrong, for a person.
	Error string `json:"error"`
	// Code is a stable word for programs: bad_request, unknown_token, expired_token,
	// used_up_token, revoked_token, bad_csr, revoked, conflict, unauthorized, not_found, rate_limited,
	// too_large, internal.
	Code string `json:"code"`
}

// TokenCreateRequest is the body of POST /v1/admin/tokens.
type TokenCreateRequest struct {
	TTLSeconds int64             `json:"ttl_seconds"`
	Uses       int               `json:"uses"`
	Labels     map[string]string `json:"labels,omitempty"`
	// Role is assigned to devices enrolling with the token; empty means a standalone server.
	Role *Role `json:"role,omitempty"`
}

// TokenCreateResponse is the new token: its secret is shown only here.
type TokenCreateResponse struct {
	Token string    `json:"token"`
	Info  TokenInfo `json:"info"`
}

// TokenInfo describes a token without its secret.
type TokenInfo struct {
	ID        string            `json:"id"`
	CreatedAt time.Time         `json:"created_at"`
	ExpiresAt time.Time         `json:"expires_at"`
	Uses      int               `json:"uses"`
	UsesLeft  int               `json:"uses_left"`
	Labels    map[string]string `json:"labels,omitempty"`
	Role      Role              `json:"role"`
	// RevokedAt is when the token was revoked (POST /v1/admin/tokens/{id}/revoke); zero
	// while it is not. A revoked token enrolls no device (code revoked_token).
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// Device is a device as the admin API shows it.
type Device struct {
	ID            string            `json:"id"`
	Hostname      string            `json:"hostname,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	State         string            `json:"state"`
	Role          Role              `json:"role"`
	CertSerial    string            `json:"cert_serial,omitempty"`
	CertNotAfter  time.Time         `json:"cert_not_after"`
	KeySHA256     string            `json:"key_sha256"`
	TokenID       string            `json:"token_id,omitempty"`
	EnrolledAt    time.Time         `json:"enrolled_at"`
	LastSeen      time.Time         `json:"last_seen,omitzero"`
	Version       string            `json:"version,omitempty"`
	Slot          string            `json:"slot,omitempty"`
	DesiredVer    string            `json:"desired_version,omitempty"`
	LastHeartbeat *Heartbeat        `json:"last_heartbeat,omitempty"`
	// Update is the latest update status the device reported, and UpdateAt when its state
	// last changed.
	Update   *UpdateStatus `json:"update,omitempty"`
	UpdateAt time.Time     `json:"update_at,omitzero"`
}

// HeartbeatRecord is a stored heartbeat.
type HeartbeatRecord struct {
	At        time.Time `json:"at"`
	Heartbeat Heartbeat `json:"heartbeat"`
}

// Event is an entry of a device's history.
type Event struct {
	At       time.Time `json:"at"`
	DeviceID string    `json:"device_id"`
	Kind     string    `json:"kind"` // enrolled, re-enrolled, renewed, labels, revoked, reset, ...
	Detail   string    `json:"detail,omitempty"`
}

// DeviceDetail is the answer of GET /v1/admin/devices/{id}.
type DeviceDetail struct {
	Device     Device            `json:"device"`
	Heartbeats []HeartbeatRecord `json:"heartbeats"`
	Events     []Event           `json:"events"`
}

// LabelRequest is the body of POST /v1/admin/devices/{id}/labels.
type LabelRequest struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// Limits on fields.
const (
	maxIDLen       = 64
	maxHostnameLen = 63
	maxLabels      = 32
	maxLabelLen    = 63
	maxLabelValLen = 255
	maxCSRLen      = 16 << 10
	maxTokenLen    = 256
	maxShortLen    = 64
	maxListLen     = 100
	maxErrLen      = 512
)

// ValidDeviceID reports whether id can be a device ID: 1–64 characters of [A-Za-z0-9._-],
// starting with a letter or digit.
func ValidDeviceID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("device id %q: must be 1 to %d characters", trunc(id), maxIDLen)
	}
	for i, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '-')) {
			return fmt.Errorf("device id %q: only letters, digits, '.', '_' and '-', starting with a letter or digit", trunc(id))
		}
	}
	return nil
}

// ValidHostname checks an RFC 1123 host name label (what K3s accepts as a node name).
func ValidHostname(h string) error {
	if len(h) > maxHostnameLen {
		return fmt.Errorf("hostname %q: longer than %d characters", trunc(h), maxHostnameLen)
	}
	for i, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(h)-1) {
			return fmt.Errorf("hostname %q: only lower-case letters, digits and inner '-'", trunc(h))
		}
	}
	return nil
}

// ValidLabels checks label keys (Kubernetes-style name, optional prefix/) and values.
func ValidLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return fmt.Errorf("labels: %d, at most %d", len(labels), maxLabels)
	}
	for k, v := range labels {
		if err := ValidLabelKey(k); err != nil {
			return err
		}
		if len(v) > maxLabelValLen {
			return fmt.Errorf("label %s: value longer than %d characters", k, maxLabelValLen)
		}
		for _, c := range v {
			if c < 0x20 || c == 0x7f {
				return fmt.Errorf("label %s: value has a control character", k)
			}
		}
	}
	return nil
}

// ValidLabelKey checks one label key.
func ValidLabelKey(k string) error {
	name := k
	if i := strings.LastIndexByte(k, '/'); i >= 0 {
		name = k[i+1:]
		if i == 0 || i > 253 {
			return fmt.Errorf("label key %q: bad prefix", trunc(k))
		}
	}
	if name == "" || len(name) > maxLabelLen {
		return fmt.Errorf("label key %q: name must be 1 to %d characters", trunc(k), maxLabelLen)
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/') {
			return fmt.Errorf("label key %q: only letters, digits, '.', '_', '-' and one '/'", trunc(k))
		}
	}
	return nil
}

// Validate checks a role.
func (r Role) Validate() error {
	switch r.Kind {
	case RoleServer:
		if r.ServerURL != "" || r.Token != "" {
			return errors.New("role server: takes no server_url or token")
		}
	case RoleAgent:
		if !strings.HasPrefix(r.ServerURL, "https://") || len(r.ServerURL) > 512 || strings.ContainsAny(r.ServerURL, " \n\r\t\"'") {
			return fmt.Errorf("role agent: server_url %q must be an https:// URL", trunc(r.ServerURL))
		}
		if r.Token == "" || len(r.Token) > maxTokenLen || strings.ContainsAny(r.Token, " \n\r\t\"'") {
			return errors.New("role agent: needs a K3s token without spaces or quotes")
		}
	default:
		return fmt.Errorf("role kind %q: must be %q or %q", trunc(r.Kind), RoleServer, RoleAgent)
	}
	return nil
}

// Validate checks an enrollment request's fields (not the CSR's content: the CA does that).
func (r *EnrollRequest) Validate() error {
	if err := ValidDeviceID(r.DeviceID); err != nil {
		return err
	}
	if len(r.Token) > maxTokenLen {
		return errors.New("token: too long")
	}
	if r.CSR == "" || len(r.CSR) > maxCSRLen {
		return fmt.Errorf("csr: must be a PEM certificate request of at most %d bytes", maxCSRLen)
	}
	if err := ValidHostname(r.Hostname); err != nil {
		return err
	}
	if err := ValidLabels(r.Labels); err != nil {
		return err
	}
	return validShort(map[string]string{"version": r.Version, "slot": r.Slot})
}

// Validate checks a heartbeat's fields.
func (h *Heartbeat) Validate() error {
	if err := validShort(map[string]string{"version": h.Version, "slot": h.Slot, "role": h.Role}); err != nil {
		return err
	}
	if h.UptimeSeconds < 0 {
		return errors.New("uptime_seconds: negative")
	}
	if len(h.NotReadyPods) > maxListLen || len(h.LastErrors) > maxListLen {
		return fmt.Errorf("not_ready_pods and last_errors: at most %d entries", maxListLen)
	}
	for _, s := range append(append([]string(nil), h.NotReadyPods...), h.LastErrors...) {
		if len(s) > maxErrLen {
			return fmt.Errorf("not_ready_pods and last_errors: entries of at most %d bytes", maxErrLen)
		}
	}
	if h.MemUsed > h.MemTotal || h.DiskUsed > h.DiskTotal {
		return errors.New("mem_used or disk_used larger than the total")
	}
	if h.Update != nil {
		return h.Update.Validate()
	}
	return nil
}

// Validate checks a token request.
func (r *TokenCreateRequest) Validate() error {
	if r.TTLSeconds <= 0 || r.TTLSeconds > 10*365*24*3600 {
		return errors.New("ttl_seconds: must be positive and at most ten years")
	}
	if r.Uses <= 0 || r.Uses > 1_000_000 {
		return errors.New("uses: must be 1 to 1000000")
	}
	if err := ValidLabels(r.Labels); err != nil {
		return err
	}
	if r.Role != nil {
		return r.Role.Validate()
	}
	return nil
}

// Validate checks a label change.
func (r *LabelRequest) Validate() error {
	if err := ValidLabels(r.Set); err != nil {
		return err
	}
	if len(r.Remove) > maxLabels {
		return fmt.Errorf("remove: at most %d keys", maxLabels)
	}
	for _, k := range r.Remove {
		if err := ValidLabelKey(k); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks a renewal request.
func (r *RenewRequest) Validate() error {
	if r.CSR == "" || len(r.CSR) > maxCSRLen {
		return fmt.Errorf("csr: must be a PEM certificate request of at most %d bytes", maxCSRLen)
	}
	return nil
}

func validShort(fields map[string]string) error {
	for _, name := range []string{"version", "slot", "role"} {
		v := fields[name]
		if len(v) > maxShortLen {
			return fmt.Errorf("%s: longer than %d characters", name, maxShortLen)
		}
		for _, c := range v {
			if c <= 0x20 || c == 0x7f {
				return fmt.Errorf("%s %q: has spaces or control characters", name, trunc(v))
			}
		}
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
