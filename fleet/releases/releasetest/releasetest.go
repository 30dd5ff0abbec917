// Package releasetest makes signed OTA bundles for tests of the fleet's release store.
package releasetest

import (
	"bytes"
	"crypto/ed25519"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/edgeimg/edgeimg/ota/bundle"
)

// Key returns a signing key derived from seed.
func Key(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

// Keyring trusts the public keys of keys.
func Keyring(keys ...ed25519.PrivateKey) bundle.Keyring {
	var pubs []ed25519.PublicKey
	for _, k := range keys {
		pubs = append(pubs, k.Public().(ed25519.PublicKey))
	}
	return bundle.NewKeyring(pubs...)
}

// Data returns n pseudo-random bytes derived from seed (incompressible, so that chunk
// boundaries fall as they would on real filesystems).
func Data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// Bundle writes a bundle of release version with the parts boot and system, signed by key.
func Bundle(t testing.TB, key ed25519.PrivateKey, version string, boot, system []byte) []byte {
	t.Helper()
	src := func(name string, b []byte) bundle.Source {
		return bundle.Source{Name: name, Size: int64(len(b)), Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
	}
	var buf bytes.Buffer
	m := bundle.Manifest{Name: "demo", Version: version, Board: "rpi4", LayoutVersion: 1, MinVersion: "0"}
	if _, err := bundle.Write(&buf, m, key, []bundle.Source{src(bundle.PartBoot, boot), src(bundle.PartSystem, system)}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
