package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/fleet/api"
)

// Files in device.IdentityDir.
const (
	KeyFile  = "key.pem"
	CertFile = "cert.pem"
	CAFile   = "ca.pem"
)

// Key returns the device's ed25519 key, generating and keeping it (0600, in a 0700
// directory) the first time.
func Key(p device.Paths) (ed25519.PrivateKey, error) {
	dir := p.Path(device.IdentityDir)
	path := filepath.Join(dir, KeyFile)
	data, err := os.ReadFile(path)
	if err == nil {
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("%s: not a PEM private key", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		key, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: %T, want an ed25519 key", path, k)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading the device key: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := device.WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// CSR returns a PEM certificate request for key with common name id.
func CSR(id string, key ed25519.PrivateKey) (string, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, key)
	if err != nil {
		return "", fmt.Errorf("creating the certificate request: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// SaveCertificate checks that certPEM is for key and keeps it and the fleet CA.
func SaveCertificate(p device.Paths, key ed25519.PrivateKey, certPEM, caPEM []byte) error {
	cert, err := parseCert(certPEM)
	if err != nil {
		return fmt.Errorf("the fleet's certificate: %w", err)
	}
	if pub, ok := cert.PublicKey.(ed25519.PublicKey); !ok || !bytes.Equal(pub, key.Public().(ed25519.PublicKey)) {
		return errors.New("the fleet's certificate is not for this device's key")
	}
	if _, err := parseCert(caPEM); err != nil {
		return fmt.Errorf("the fleet's CA: %w", err)
	}
	dir := p.Path(device.IdentityDir)
	if err := device.WriteFileAtomic(filepath.Join(dir, CAFile), caPEM, 0o644); err != nil {
		return err
	}
	return device.WriteFileAtomic(filepath.Join(dir, CertFile), certPEM, 0o644)
}

func parseCert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// Certificate returns the kept certificate with key as a tls.Certificate, and the parsed
// leaf; nil, nil, nil when there is none.
func Certificate(p device.Paths, key ed25519.PrivateKey) (*tls.Certificate, *x509.Certificate, error) {
	path := filepath.Join(p.Path(device.IdentityDir), CertFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading the device certificate: %w", err)
	}
	leaf, err := parseCert(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, leaf, nil
}

// Enrollment is the record of a finished enrollment: the commit point, written last.
type Enrollment struct {
	DeviceID                 string    `json:"device_id"`
	Role                     api.Role  `json:"role"`
	HeartbeatIntervalSeconds int       `json:"heartbeat_interval_seconds,omitempty"`
	EnrolledAt               time.Time `json:"enrolled_at"`
}

// SaveEnrollment keeps the enrollment record (0600: the role may carry a K3s token).
func SaveEnrollment(p device.Paths, e *Enrollment) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	return device.WriteFileAtomic(p.Path(device.EnrollmentFile), append(b, '\n'), 0o600)
}

// LoadEnrollment reads the enrollment record; nil when the device has not enrolled.
func LoadEnrollment(p device.Paths) (*Enrollment, error) {
	b, err := os.ReadFile(p.Path(device.EnrollmentFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the enrollment: %w", err)
	}
	var e Enrollment
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Path(device.EnrollmentFile), err)
	}
	return &e, nil
}

// ClearEnrollment removes the enrollment record (the key and certificate stay, so the device
// can enroll again with its certificate).
func ClearEnrollment(p device.Paths) error {
	path := p.Path(device.EnrollmentFile)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	if _, err := os.Stat(filepath.Dir(path)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return device.SyncDir(filepath.Dir(path))
}
