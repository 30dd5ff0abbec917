package bundle

import "crypto/ed25519"

// VerifyManifest checks that sigJSON (manifest.sig) is a signature of manifestJSON
// (manifest.json's exact bytes) by a key of keys, and only then parses the manifest. It
// returns the manifest and the id of the key that signed it. Open uses it; a device calls it
// on a manifest fetched on its own, before it downloads anything the manifest describes.
// Errors are *Error: ErrUnknownKey, ErrBadSignature, ErrMalformed or ErrUnsupported.
func VerifyManifest(manifestJSON, sigJSON []byte, keys Keyring) (*Manifest, string, error) {
	if len(manifestJSON) > MaxManifestSize {
		return nil, "", Errorf(ErrMalformed, "manifest.json is %d bytes, at most %d", len(manifestJSON), MaxManifestSize)
	}
	sig, err := parseSignature(sigJSON)
	if err != nil {
		return nil, "", err
	}
	pub, ok := keys[sig.KeyID]
	if !ok {
		return nil, "", Errorf(ErrUnknownKey, "manifest signed by key %s, which this device does not trust", sig.KeyID)
	}
	if !ed25519.Verify(pub, manifestJSON, sig.Signature) {
		return nil, "", Errorf(ErrBadSignature, "the signature of key %s does not match manifest.json", sig.KeyID)
	}
	m, err := ParseManifest(manifestJSON)
	if err != nil {
		return nil, "", err
	}
	return m, sig.KeyID, nil
}
