package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// The bundle is a tar stream (POSIX ustar; PAX only for a part above 8 GiB) of regular files
// in this order: manifest.json, manifest.sig, then one file per part named after it, in the
// manifest's order. A device reads it front to back once: the signature is checked before the
// parts are touched, and each part is hashed while it is written to its partition.
const (
	ManifestFile  = "manifest.json"
	SignatureFile = "manifest.sig"
)

// Ext is the file name extension of a bundle: NAME-BOARD.update.
const Ext = ".update"

// Source is a part to put into a bundle.
type Source struct {
	Name  string                        // PartBoot or PartSystem
	Size  int64                         // bytes Open yields
	Open  func() (io.ReadCloser, error) // opened twice: to hash, then to write
	Patch *Patch                        // per-slot patch (the boot part's cmdline.txt)
}

// Write hashes the sources, fills m.Parts from them, signs the manifest with key and writes
// the bundle to w. It returns the manifest as signed.
func Write(w io.Writer, m Manifest, key ed25519.PrivateKey, parts []Source) (*Manifest, error) {
	m.Format = FormatVersion
	m.Parts = nil
	for _, s := range parts {
		sum, err := hashSource(s)
		if err != nil {
			return nil, err
		}
		m.Parts = append(m.Parts, Part{Name: s.Name, Size: s.Size, SHA256: sum, Patch: s.Patch})
	}
	mb, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	sig, err := json.Marshal(Signature{KeyID: KeyID(key.Public().(ed25519.PublicKey)), Signature: ed25519.Sign(key, mb)})
	if err != nil {
		return nil, err
	}
	if err := WriteStream(w, mb, sig, parts); err != nil {
		return nil, err
	}
	return &m, nil
}

// WriteStream writes the bundle container to w: manifest and sig as manifest.json and
// manifest.sig, then each part's Size bytes from its Open, in order. It neither signs nor
// hashes: the caller passes the exact signed bytes (a delta download reassembling a release,
// see ota/delta). Write uses it, so every bundle's tar headers come from this one function.
func WriteStream(w io.Writer, manifest, sig []byte, parts []Source) error {
	tw := tar.NewWriter(w)
	if err := writeEntry(tw, ManifestFile, int64(len(manifest)), bytesOpener(manifest)); err != nil {
		return err
	}
	if err := writeEntry(tw, SignatureFile, int64(len(sig)), bytesOpener(sig)); err != nil {
		return err
	}
	for _, s := range parts {
		if err := writeEntry(tw, s.Name, s.Size, s.Open); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing bundle: %w", err)
	}
	return nil
}

func bytesOpener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

func hashSource(s Source) (string, error) {
	r, err := s.Open()
	if err != nil {
		return "", fmt.Errorf("part %s: %w", s.Name, err)
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return "", fmt.Errorf("part %s: %w", s.Name, err)
	}
	if n != s.Size {
		return "", fmt.Errorf("part %s: read %d bytes, expected %d", s.Name, n, s.Size)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// EntryHeader returns the tar header Write gives the entry name of size bytes, so that a
// bundle can be laid out again byte for byte from its manifest, signature and parts (the
// fleet server serves bundles reassembled from their stored chunks).
func EntryHeader(name string, size int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644,
		ModTime: time.Unix(0, 0).UTC(), Uname: "root", Gname: "root"}
}

func writeEntry(tw *tar.Writer, name string, size int64, open func() (io.ReadCloser, error)) error {
	if err := tw.WriteHeader(EntryHeader(name, size)); err != nil {
		return fmt.Errorf("writing bundle %s: %w", name, err)
	}
	r, err := open()
	if err != nil {
		return fmt.Errorf("part %s: %w", name, err)
	}
	defer r.Close()
	n, err := io.Copy(tw, r)
	if err != nil {
		return fmt.Errorf("writing bundle %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("part %s: read %d bytes, expected %d", name, n, size)
	}
	return nil
}

// Reader reads a bundle from a stream. Open has verified the manifest's signature; Next
// returns the parts in order, each as a reader that fails at its end if the hash is wrong.
type Reader struct {
	tr   *tar.Reader
	m    *Manifest
	mb   []byte
	sb   []byte
	key  string
	next int
	cur  *partReader
}

// Open reads manifest.json and manifest.sig from r and verifies the signature with a key of
// keys before parsing the manifest. Errors are *Error: ErrUnknownKey, ErrBadSignature,
// ErrTruncated, ErrMalformed or ErrUnsupported.
func Open(r io.Reader, keys Keyring) (*Reader, error) {
	tr := tar.NewReader(r)
	mb, err := readSmall(tr, ManifestFile, MaxManifestSize)
	if err != nil {
		return nil, err
	}
	sb, err := readSmall(tr, SignatureFile, MaxSignatureSize)
	if err != nil {
		return nil, err
	}
	m, keyID, err := VerifyManifest(mb, sb, keys)
	if err != nil {
		return nil, err
	}
	return &Reader{tr: tr, m: m, mb: mb, sb: sb, key: keyID}, nil
}

// Manifest returns the verified manifest.
func (r *Reader) Manifest() *Manifest { return r.m }

// Signed returns the exact bytes of manifest.json and manifest.sig as read (verified).
func (r *Reader) Signed() (manifest, signature []byte) { return r.mb, r.sb }

// KeyID returns the id of the key that signed the manifest.
func (r *Reader) KeyID() string { return r.key }

// Next returns the next part and a reader of exactly its bytes. The reader returns an *Error
// (ErrTruncated, ErrHashMismatch) instead of io.EOF when the bytes are not what the manifest
// says; only a reader that reached io.EOF has been verified. After the last part Next returns
// io.EOF, having checked that nothing follows it.
func (r *Reader) Next() (*Part, io.Reader, error) {
	if r.cur != nil && !r.cur.done {
		return nil, nil, fmt.Errorf("part %s was not read to its end", r.cur.part.Name)
	}
	if r.next == len(r.m.Parts) {
		if _, err := r.tr.Next(); err != io.EOF {
			if err == nil {
				return nil, nil, Errorf(ErrMalformed, "data after the last part")
			}
			return nil, nil, tarErr("after the last part", err)
		}
		return nil, nil, io.EOF
	}
	p := &r.m.Parts[r.next]
	hdr, err := r.tr.Next()
	if err != nil {
		return nil, nil, tarErr("part "+p.Name, err)
	}
	if hdr.Name != p.Name || hdr.Typeflag != tar.TypeReg {
		return nil, nil, Errorf(ErrMalformed, "entry %q where part %q was expected", hdr.Name, p.Name)
	}
	if hdr.Size != p.Size {
		return nil, nil, Errorf(ErrSizeMismatch, "part %s is %d bytes in the bundle, the manifest says %d", p.Name, hdr.Size, p.Size)
	}
	r.next++
	r.cur = &partReader{part: p, r: r.tr, h: sha256.New(), left: p.Size}
	return p, r.cur, nil
}

func tarErr(what string, err error) error {
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{Reason: ErrTruncated, Detail: "the bundle ends before " + what, Err: err}
	}
	return &Error{Reason: ErrMalformed, Detail: what, Err: err}
}

func readSmall(tr *tar.Reader, name string, limit int64) ([]byte, error) {
	hdr, err := tr.Next()
	if err != nil {
		return nil, tarErr(name, err)
	}
	if hdr.Name != name || hdr.Typeflag != tar.TypeReg {
		return nil, Errorf(ErrMalformed, "entry %q where %s was expected", hdr.Name, name)
	}
	if hdr.Size < 0 || hdr.Size > limit {
		return nil, Errorf(ErrMalformed, "%s is %d bytes, at most %d", name, hdr.Size, limit)
	}
	b := make([]byte, hdr.Size)
	if _, err := io.ReadFull(tr, b); err != nil {
		return nil, tarErr(name, err)
	}
	return b, nil
}

type partReader struct {
	part *Part
	r    io.Reader
	h    hash.Hash
	left int64
	done bool
}

func (p *partReader) Read(b []byte) (int, error) {
	if p.done {
		return 0, io.EOF
	}
	if p.left == 0 {
		if got := hex.EncodeToString(p.h.Sum(nil)); got != p.part.SHA256 {
			return 0, Errorf(ErrHashMismatch, "part %s has sha256 %s, the manifest says %s", p.part.Name, got, p.part.SHA256)
		}
		p.done = true
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, err := p.r.Read(b)
	p.h.Write(b[:n])
	p.left -= int64(n)
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		if p.left > 0 {
			return n, &Error{Reason: ErrTruncated, Detail: fmt.Sprintf("part %s ends %d bytes early", p.part.Name, p.left), Err: io.ErrUnexpectedEOF}
		}
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("reading part %s: %w", p.part.Name, err)
	}
	return n, nil
}
