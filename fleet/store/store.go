package store

import (
	"context"
	"errors"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
)

// Errors of the store; the server maps them to HTTP statuses.
var (
	ErrNotFound      = errors.New("not found")
	ErrUnknownToken  = errors.New("unknown enrollment token")
	ErrExpiredToken  = errors.New("enrollment token expired")
	ErrUsedUpToken   = errors.New("enrollment token used up")
	ErrRevokedToken  = errors.New("enrollment token revoked")
	ErrRevoked       = errors.New("device revoked")
	ErrConflict      = errors.New("device already enrolled with another key")
	ErrKeyMismatch   = errors.New("certificate key is not the device's enrolled key")
	ErrTokenIDExists = errors.New("token id exists")
)

// HeartbeatHistory is how many heartbeats are kept per device (a ring; the device row keeps
// the latest too).
const HeartbeatHistory = 64

// Token is an enrollment token as stored: only the SHA-256 of its secret.
type Token struct {
	ID        string
	Hash      string // hex SHA-256 of the token
	CreatedAt time.Time
	ExpiresAt time.Time
	Uses      int
	Labels    map[string]string
	Role      api.Role
}

// Enrollment is one enrollment attempt, already authenticated by the caller as far as it can
// be outside the store: the CSR is checked and signed, and a certificate re-enrollment's client
// certificate matched the device.
type Enrollment struct {
	DeviceID string
	Hostname string
	Labels   map[string]string
	Version  string
	Slot     string
	// TokenHash is the hex SHA-256 of the token; empty when ByCert.
	TokenHash string
	// ByCert is set when the device re-enrolls with its certificate (for its enrolled key).
	ByCert       bool
	KeySHA256    string
	CertSerial   string
	CertNotAfter time.Time
	At           time.Time
}

// DeviceFilter selects devices; zero fields match all.
type DeviceFilter struct {
	State  string
	Labels map[string]string
}

// Store keeps tokens, devices, heartbeats and events. Every method is atomic: a refused or
// failed call changes nothing.
type Store interface {
	// CreateToken stores a new token.
	CreateToken(ctx context.Context, t Token) error
	// Tokens lists the tokens, newest first.
	Tokens(ctx context.Context) ([]api.TokenInfo, error)
	// RevokeToken revokes the token with ID id: enrollments with it are refused from then on
	// (ErrRevokedToken); devices already enrolled with it are not affected. Revoking a revoked
	// token again changes nothing (it keeps its first revocation time). ErrNotFound for an
	// unknown ID.
	RevokeToken(ctx context.Context, id string, at time.Time) (api.TokenInfo, error)
	// Enroll enrolls or re-enrolls a device. A new device uses up one use of a valid token
	// (neither expired, used up nor revoked).
	// Enrolling again with the same key (a retry) uses none and is idempotent. A device with
	// another key is refused (ErrConflict) unless a reset was ordered; a revoked device
	// always is (ErrRevoked).
	Enroll(ctx context.Context, e Enrollment) (api.Device, error)
	// Renew records a renewed certificate for the device's enrolled key.
	Renew(ctx context.Context, id, keySHA256, serial string, notAfter, at time.Time) (api.Device, error)
	// Device returns one device (ErrNotFound).
	Device(ctx context.Context, id string) (api.Device, error)
	// Devices lists devices by ID.
	Devices(ctx context.Context, f DeviceFilter) ([]api.Device, error)
	// Heartbeat records a heartbeat of a non-revoked device whose key is keySHA256 and returns
	// the device's desired state, the heartbeat's answer (ErrRevoked, ErrKeyMismatch,
	// ErrNotFound).
	Heartbeat(ctx context.Context, id, keySHA256 string, hb api.Heartbeat, at time.Time) (api.Desired, error)
	// Heartbeats returns up to limit recent heartbeats of a device, newest first.
	Heartbeats(ctx context.Context, id string, limit int) ([]api.HeartbeatRecord, error)
	// Events returns up to limit recent events of a device, newest first.
	Events(ctx context.Context, id string, limit int) ([]api.Event, error)
	// Label sets and removes labels of a device.
	Label(ctx context.Context, id string, set map[string]string, remove []string, at time.Time) (api.Device, error)
	// Revoke revokes a device: its certificate stops working and it cannot enroll again.
	Revoke(ctx context.Context, id string, at time.Time) (api.Device, error)
	// RequestReset orders a reset: the device is told so in its next heartbeat answer and may
	// then re-enroll, with a new key if it lost its old one.
	RequestReset(ctx context.Context, id string, at time.Time) (api.Device, error)
	// SetRole sets the role a device should have.
	SetRole(ctx context.Context, id string, role api.Role, at time.Time) (api.Device, error)
	// PutRelease records a release the release store holds. Recording the same release
	// again does nothing; another with its version is refused (ErrReleaseConflict).
	PutRelease(ctx context.Context, info api.ReleaseInfo) error
	// Releases lists the recorded releases, newest first.
	Releases(ctx context.Context) ([]api.ReleaseInfo, error)
	// Release returns a recorded release (ErrNotFound).
	Release(ctx context.Context, version string) (api.ReleaseInfo, error)
	// StartRollout starts the rollout of a recorded release to the active devices that
	// match req.Selector, and tells the first wave (rollout.go). Another unfinished rollout
	// (running, paused or halted) refuses it (ErrRolloutConflict); a finished rollout of the
	// same release is replaced.
	StartRollout(ctx context.Context, version string, req api.RolloutRequest, at time.Time) (api.RolloutStatus, error)
	// Rollout returns a rollout's status (ErrNotFound).
	Rollout(ctx context.Context, version string) (api.RolloutStatus, error)
	// Rollouts lists the rollouts, newest first.
	Rollouts(ctx context.Context) ([]api.RolloutStatus, error)
	// RolloutEvents returns up to limit recent events of a rollout, newest first.
	RolloutEvents(ctx context.Context, version string, limit int) ([]api.Event, error)
	// RolloutAction pauses, resumes or aborts a rollout (action "pause", "resume", "abort");
	// an action its state does not allow is refused (ErrRolloutConflict). Abort stops telling
	// the devices that do not run the release yet to update.
	RolloutAction(ctx context.Context, version, action string, at time.Time) (api.RolloutStatus, error)
	// AdvanceRollouts takes one step of every running rollout: halt, next wave or
	// completion. It returns the number of steps taken: 0 also when another fleet replica
	// holds the rollout lock. It is idempotent.
	AdvanceRollouts(ctx context.Context, at time.Time) (int, error)
	// CountByState counts devices by state.
	CountByState(ctx context.Context) (map[string]int, error)
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// Close closes the store.
	Close() error
}
