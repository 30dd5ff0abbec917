package bundle

import "fmt"

// Reason is why a bundle was rejected. Each Reason is an error itself, so callers test a
// rejection with errors.Is(err, bundle.ErrDowngrade) and report the reason to the fleet with
// errors.As(err, &e) and e.Reason.
type Reason string

// Error returns the reason as text.
func (r Reason) Error() string { return string(r) }

// The reasons a bundle is rejected.
const (
	ErrMalformed    Reason = "malformed bundle"          // not a bundle, or a manifest that does not parse or is not canonical
	ErrTruncated    Reason = "truncated bundle"          // the stream ended early
	ErrBadSignature Reason = "bad signature"             // a trusted key's signature that does not verify
	ErrUnknownKey   Reason = "unknown signing key"       // signed by a key the device does not trust
	ErrHashMismatch Reason = "part hash mismatch"        // a part's bytes do not hash to the manifest's sha256
	ErrSizeMismatch Reason = "manifest lies about sizes" // a part's stored size differs from the manifest's
	ErrWrongBoard   Reason = "wrong board"               // the bundle is for another board
	ErrLayout       Reason = "disk layout mismatch"      // the bundle's layout version is not the card's
	ErrDowngrade    Reason = "downgrade"                 // older than (or the same as) the installed release, not marked rollback
	ErrMinVersion   Reason = "installed version too old" // below the bundle's minimum version to update from
	ErrTooBig       Reason = "bigger than the slot"      // a part does not fit its partition
	ErrUnsupported  Reason = "unsupported bundle format" // a format version this device does not read
)

// Error is a rejected bundle: the Reason and what exactly was wrong.
type Error struct {
	Reason Reason
	Detail string
	Err    error // underlying error, if any
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Reason, e.Detail, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Reason, e.Detail)
}

// Is makes errors.Is(err, reason) true for an Error with that Reason.
func (e *Error) Is(target error) bool { r, ok := target.(Reason); return ok && r == e.Reason }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Errorf makes an Error with a formatted detail.
func Errorf(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...)}
}
