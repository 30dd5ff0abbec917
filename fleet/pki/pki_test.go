package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func csrPEM(t *testing.T, key any, cn string, dns ...string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestInitAndSign(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, []string{"fleet.example.com", "10.0.0.5"}, now); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{CAFile: 0o644, CAKeyFile: 0o600, ServerFile: 0o644, ServerKeyFile: 0o600, AdminTokenFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %v", name, fi.Mode(), err, mode)
		}
	}
	if err := Init(dir, nil, now); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second init: %v", err)
	}
	ca, err := LoadCA(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := ServerTLSConfig(ca, filepath.Join(dir, ServerFile), filepath.Join(dir, ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(tlsConf.Certificates[0].Certificate[0])
	for _, host := range []string{"fleet.example.com", "10.0.0.5", "localhost", "127.0.0.1"} {
		if err := leaf.VerifyHostname(host); err != nil {
			t.Errorf("server certificate: %v", err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now}); err != nil {
		t.Errorf("server certificate does not chain to the CA: %v", err)
	}
	if tok, err := ReadAdminToken(filepath.Join(dir, AdminTokenFile)); err != nil || len(tok) != 43 {
		t.Errorf("admin token %q: %v", tok, err)
	}

	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	csr, err := ParseCSR(csrPEM(t, edKey, "dev-1"), "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.Sign(csr, now, DeviceValidity)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(iss.CertPEM)
	cert, _ := x509.ParseCertificate(block.Bytes)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("device certificate: %v", err)
	}
	if cert.Subject.CommonName != "dev-1" || !cert.NotAfter.Equal(now.Add(DeviceValidity)) || cert.SerialNumber.Text(16) != iss.Serial {
		t.Errorf("device certificate: %v %v %v", cert.Subject, cert.NotAfter, iss.Serial)
	}
	if sum, _ := KeySHA256(edKey.Public()); sum != iss.KeySHA256 {
		t.Error("key hash")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("a device certificate is valid for servers")
	}
}

func TestParseCSRRefusals(t *testing.T) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	good := csrPEM(t, ed, "dev-1")
	block, _ := pem.Decode(good)
	block.Bytes[len(block.Bytes)-1] ^= 1 // the signature's last byte
	forged := pem.EncodeToMemory(block)
	for name, c := range map[string]struct {
		pem    []byte
		reason string
	}{
		"other cn":  {csrPEM(t, ed, "dev-2"), `common name "dev-2" is not the device id "dev-1"`},
		"p384":      {csrPEM(t, p384, "dev-1"), "P-384"},
		"rsa":       {csrPEM(t, rsaKey, "dev-1"), "*rsa.PublicKey key"},
		"sans":      {csrPEM(t, ed, "dev-1", "evil.example.com"), "subject alternative names"},
		"not pem":   {[]byte("hello"), "not one PEM"},
		"forged":    {forged, "signature"},
		"two":       {append(append([]byte{}, good...), good...), "not one PEM"},
		"cert type": {[]byte(strings.ReplaceAll(string(good), "CERTIFICATE REQUEST", "CERTIFICATE")), "not one PEM"},
	} {
		_, err := ParseCSR(c.pem, "dev-1")
		if !errors.Is(err, ErrBadCSR) || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: %v, want %q", name, err, c.reason)
		}
	}
}

func FuzzParseCSR(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMIGbMEcCAQAwEDEOMAwGA1UEAxMFZGV2LTEwKjAFBgMrZXADIQA=\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if csr, err := ParseCSR(data, "dev-1"); err == nil && csr.Subject.CommonName != "dev-1" {
			t.Fatal("accepted a CSR for another device")
		}
	})
}

// TestCertKeySHA256: the hash of a signed certificate's key, taken from its DER, is the hash
// of the key enrolled from the CSR, for both key types devices use.
func TestCertKeySHA256(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, nil, now); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, key := range map[string]interface{ Public() crypto.PublicKey }{"ed25519": ed, "ecdsa": ec} {
		csr, err := ParseCSR(csrPEM(t, key, "dev-"+name), "dev-"+name)
		if err != nil {
			t.Fatal(err)
		}
		iss, err := ca.Sign(csr, now, DeviceValidity)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(iss.CertPEM)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := KeySHA256(key.Public())
		if got := CertKeySHA256(cert); got != want || got != iss.KeySHA256 {
			t.Errorf("%s: CertKeySHA256 %s, KeySHA256 %s, enrolled %s", name, got, want, iss.KeySHA256)
		}
	}
}
