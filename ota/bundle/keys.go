package bundle

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// KeyID names a public key: the lower-case hex sha256 of its 32 raw bytes.
func KeyID(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:])
}

// GenerateKey makes a signing key from rand (crypto/rand.Reader in production) and returns
// the private key as PEM PKCS#8 ("PRIVATE KEY") and the public key as PEM PKIX ("PUBLIC KEY").
func GenerateKey(rand io.Reader) (priv, pub []byte, err error) {
	pk, sk, err := ed25519.GenerateKey(rand)
	if err != nil {
		return nil, nil, fmt.Errorf("generating ed25519 key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(sk)
	if err != nil {
		return nil, nil, err
	}
	pder, err := x509.MarshalPKIXPublicKey(pk)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), nil
}

// ParsePrivateKey reads a PEM PKCS#8 ed25519 private key (what GenerateKey writes).
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM PRIVATE KEY (PKCS#8)")
	}
	if len(pemTrim(rest)) != 0 {
		return nil, errors.New("trailing data after the PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing PKCS#8: %w", err)
	}
	sk, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, not ed25519", k)
	}
	return sk, nil
}

// ParsePublicKey reads a PEM PKIX ed25519 public key (what GenerateKey writes).
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM PUBLIC KEY")
	}
	if len(pemTrim(rest)) != 0 {
		return nil, errors.New("trailing data after the PEM block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	pk, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, not ed25519", k)
	}
	return pk, nil
}

// PublicKeyPEM returns the PEM PKIX form of a public key.
func PublicKeyPEM(pk ed25519.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pk) // cannot fail for ed25519
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func pemTrim(b []byte) []byte {
	for len(b) > 0 && (b[0] == '\n' || b[0] == '\r' || b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// Keyring is the set of public keys a device trusts, by KeyID. Several keys let a signing
// key be rotated: releases signed by the old or the new key are accepted while both are listed.
type Keyring map[string]ed25519.PublicKey

// NewKeyring makes a Keyring of the keys.
func NewKeyring(keys ...ed25519.PublicKey) Keyring {
	k := Keyring{}
	for _, p := range keys {
		k[KeyID(p)] = p
	}
	return k
}

// CreateKeyFiles makes a signing key from rand and writes it as PREFIX.key (mode 0600, PEM
// PKCS#8) and PREFIX.pub (0644, PEM PKIX), creating PREFIX's directory. It never replaces an
// existing file: losing a signing key means devices accept no more updates from it.
func CreateKeyFiles(prefix string, rand io.Reader) (keyFile, pubFile, keyID string, err error) {
	priv, pub, err := GenerateKey(rand)
	if err != nil {
		return "", "", "", err
	}
	pk, err := ParsePublicKey(pub)
	if err != nil {
		return "", "", "", err
	}
	keyFile, pubFile = prefix+".key", prefix+".pub"
	if err := os.MkdirAll(filepath.Dir(prefix), 0o755); err != nil {
		return "", "", "", err
	}
	for _, f := range []string{keyFile, pubFile} {
		if _, err := os.Lstat(f); err == nil {
			return "", "", "", fmt.Errorf("%s exists: not replacing a key", f)
		}
	}
	if err := writeNew(keyFile, priv, 0o600); err != nil {
		return "", "", "", err
	}
	if err := writeNew(pubFile, pub, 0o644); err != nil {
		os.Remove(keyFile)
		return "", "", "", err
	}
	return keyFile, pubFile, KeyID(pk), nil
}

func writeNew(p string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil { // whatever the umask
		f.Close()
		os.Remove(p)
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(p)
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return f.Close()
}
