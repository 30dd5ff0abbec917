package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// RequestError is a refused request: the HTTP status, the Error code and the reason.
type RequestError struct {
	Status int
	Code   string
	Reason string
}

func (e *RequestError) Error() string { return e.Reason }

// Errorf returns a RequestError.
func Errorf(status int, code, format string, args ...any) *RequestError {
	return &RequestError{Status: status, Code: code, Reason: fmt.Sprintf(format, args...)}
}

// Validator is a wire type that checks its own fields.
type Validator interface{ Validate() error }

// Decode reads one JSON value of type T from r strictly: at most limit bytes, no unknown
// fields, nothing after the value, then T's Validate. Its errors are *RequestError (400, or 413
// when the body is too large).
func Decode[T any, PT interface {
	*T
	Validator
}](r io.Reader, limit int64) (PT, error) {
	return decode[T, PT](r, limit, true)
}

// DecodeResponse reads an answer of the server: like Decode, but unknown fields are ignored,
// so a newer server can add fields without breaking older devices.
func DecodeResponse[T any, PT interface {
	*T
	Validator
}](r io.Reader, limit int64) (PT, error) {
	return decode[T, PT](r, limit, false)
}

func decode[T any, PT interface {
	*T
	Validator
}](r io.Reader, limit int64, strict bool) (PT, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) || int64(len(data)) > limit {
		return nil, Errorf(http.StatusRequestEntityTooLarge, "too_large", "request body larger than %d bytes", limit)
	}
	if err != nil {
		return nil, Errorf(http.StatusBadRequest, "bad_request", "reading the body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if strict {
		dec.DisallowUnknownFields()
	}
	v := PT(new(T))
	if err := dec.Decode(v); err != nil {
		return nil, Errorf(http.StatusBadRequest, "bad_request", "malformed JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, Errorf(http.StatusBadRequest, "bad_request", "malformed JSON: data after the object")
	}
	if err := v.Validate(); err != nil {
		return nil, Errorf(http.StatusBadRequest, "bad_request", "%v", err)
	}
	return v, nil
}

// Validate checks an enrollment answer.
func (r *EnrollResponse) Validate() error {
	if err := ValidDeviceID(r.DeviceID); err != nil {
		return err
	}
	if r.Certificate == "" || r.CA == "" {
		return errors.New("enrollment answer without certificate or CA")
	}
	if r.HeartbeatIntervalSeconds < 0 {
		return errors.New("heartbeat_interval_seconds: negative")
	}
	return r.Role.Validate()
}

// Validate checks a renewal answer.
func (r *RenewResponse) Validate() error {
	if r.Certificate == "" {
		return errors.New("renewal answer without certificate")
	}
	return nil
}

// Validate checks a heartbeat answer.
func (r *HeartbeatResponse) Validate() error { return r.Desired.Role.Validate() }

// Validate checks an error answer.
func (e *Error) Validate() error { return nil }
