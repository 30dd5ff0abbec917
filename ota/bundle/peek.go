package bundle

import (
	"archive/tar"
	"io"
)

// PeekManifest reads manifest.json and manifest.sig from the start of a bundle and returns
// the parsed manifest and the id of the key that claims to have signed it, WITHOUT checking
// the signature. It is for display and labelling only (what a file is, before it is pushed
// or tagged): nothing it returns may decide whether to install anything; use Open with a
// keyring for that. Errors are *Error: ErrTruncated, ErrMalformed or ErrUnsupported.
func PeekManifest(r io.Reader) (m *Manifest, keyID string, err error) {
	tr := tar.NewReader(r)
	mb, err := readSmall(tr, ManifestFile, MaxManifestSize)
	if err != nil {
		return nil, "", err
	}
	sb, err := readSmall(tr, SignatureFile, MaxSignatureSize)
	if err != nil {
		return nil, "", err
	}
	sig, err := parseSignature(sb)
	if err != nil {
		return nil, "", err
	}
	if m, err = ParseManifest(mb); err != nil {
		return nil, "", err
	}
	return m, sig.KeyID, nil
}
