package releases

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/delta"
)

// Errors of the store.
var (
	// ErrNotFound: no such release or chunk.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a release of the same version with other content is stored.
	ErrConflict = errors.New("another bundle with this version is stored")
)

// Files of a release directory.
const (
	infoFile    = "info.json"
	indexPrefix = "index-" // index-PART.json
)

var (
	sumRE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	partRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
)

// Store keeps releases on disk under Dir:
//
//	DIR/chunks/ab/abcdef…            the chunks of every part of every release, by sha256
//	DIR/releases/VERSION/manifest.json, manifest.sig, index-PART.json, info.json
//
// Chunks are shared by the releases that contain them, so a release that differs from an
// earlier one in a few files adds only the chunks around them. A release directory appears
// complete or not at all (written aside, then renamed). Chunks of a failed push stay (they
// are content-addressed and harmless) and count as present for the next push.
type Store struct {
	Dir string

	mu sync.Mutex // serializes the final rename of a release directory
}

// Put reads a bundle from r, verifies its signature with keys and its parts with the signed
// manifest, stores its chunks and its release directory and returns its description.
// Memory stays bounded by one chunk whatever the parts' sizes. Pushing again the same
// bundle returns the stored release; another bundle with the same version is refused
// (ErrConflict). A bundle that is refused returns its *bundle.Error.
//
// The stored bundle is laid out again from its pieces as bundle.Write lays it out; Size and
// SHA256 describe that layout, which is the pushed file's for every bundle edgeimg writes.
func (s *Store) Put(ctx context.Context, r io.Reader, keys bundle.Keyring, now time.Time) (api.ReleaseInfo, error) {
	var info api.ReleaseInfo
	// 1. Verify the signature before anything is stored.
	br, err := bundle.Open(r, keys)
	if err != nil {
		return info, err
	}
	m := br.Manifest()
	mb, sb := br.Signed()
	info = api.ReleaseInfo{Version: m.Version, Name: m.Name, Board: m.Board, LayoutVersion: m.LayoutVersion,
		MinVersion: m.MinVersion, Rollback: m.Rollback, KeyID: br.KeyID(), PushedAt: now.UTC()}
	// The version names a directory: the manifest's validation allows only dot-separated
	// decimals (no "/", no "..").
	if !validVersion(m.Version) {
		return info, bundle.Errorf(bundle.ErrMalformed, "version %q", m.Version)
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, "releases"), 0o755); err != nil {
		return info, fmt.Errorf("creating the release store: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.Dir, "releases"), ".push-")
	if err != nil {
		return info, fmt.Errorf("creating the release store: %w", err)
	}
	defer os.RemoveAll(tmp)

	// 2. Lay out the bundle again while reading it: its sha256 is of that layout.
	h := sha256.New()
	var size int64
	emit := func(b []byte) { h.Write(b); size += int64(len(b)) }
	if err := emitEntry(emit, bundle.ManifestFile, mb); err != nil {
		return info, err
	}
	if err := emitEntry(emit, bundle.SignatureFile, sb); err != nil {
		return info, err
	}
	// 3. Cut each part into chunks, store the new ones, write its index.
	touched := map[string]bool{} // chunk directories that got new entries
	for {
		if err := ctx.Err(); err != nil {
			return info, err
		}
		p, pr, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return info, err
		}
		hdr, err := headerBytes(p.Name, p.Size)
		if err != nil {
			return info, err
		}
		emit(hdr)
		ix := &delta.Index{Format: delta.Format, Part: p.Name, SHA256: p.SHA256, Chunks: []delta.Chunk{}}
		err = delta.Chunks(pr, func(_ int64, data []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			emit(data)
			sum := sha256.Sum256(data)
			c := delta.Chunk{Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
			added, err := s.putChunk(c.SHA256, data)
			if err != nil {
				return err
			}
			if added {
				info.NewBytes += c.Size
				touched[c.SHA256[:2]] = true
			}
			ix.Chunks = append(ix.Chunks, c)
			ix.Size += c.Size
			return nil
		})
		if err != nil {
			return info, fmt.Errorf("storing part %s: %w", p.Name, err)
		}
		emit(make([]byte, pad(p.Size)))
		info.PartsSize += p.Size
		info.Chunks += len(ix.Chunks)
		ib, err := ix.Marshal()
		if err != nil {
			return info, fmt.Errorf("index of part %s: %w", p.Name, err)
		}
		if err := os.WriteFile(filepath.Join(tmp, indexPrefix+p.Name+".json"), ib, 0o644); err != nil {
			return info, fmt.Errorf("writing the index of part %s: %w", p.Name, err)
		}
	}
	emit(make([]byte, 2*512)) // the end of the archive
	info.Size, info.SHA256 = size, hex.EncodeToString(h.Sum(nil))

	// 4. Commit the release directory, unless this version is stored already.
	for name, b := range map[string][]byte{bundle.ManifestFile: mb, bundle.SignatureFile: sb} {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			return info, fmt.Errorf("writing %s: %w", name, err)
		}
	}
	ib, _ := json.Marshal(info)
	if err := os.WriteFile(filepath.Join(tmp, infoFile), ib, 0o644); err != nil {
		return info, fmt.Errorf("writing %s: %w", infoFile, err)
	}
	if err := syncDir(tmp); err != nil {
		return info, err
	}
	// The new chunks' names are durable before a release that needs them appears.
	for _, d := range slices.Sorted(maps.Keys(touched)) {
		if err := syncDir(filepath.Join(s.Dir, "chunks", d)); err != nil {
			return info, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, err := s.Info(m.Version); err == nil {
		if old.SHA256 == info.SHA256 {
			return old, nil
		}
		return info, fmt.Errorf("release %s: %w (sha256 %s, this one %s)", m.Version, ErrConflict, old.SHA256, info.SHA256)
	}
	if err := os.Rename(tmp, s.releaseDir(m.Version)); err != nil {
		// Another server sharing the directory may have stored it meanwhile.
		if old, ierr := s.Info(m.Version); ierr == nil {
			if old.SHA256 == info.SHA256 {
				return old, nil
			}
			return info, fmt.Errorf("release %s: %w (sha256 %s, this one %s)", m.Version, ErrConflict, old.SHA256, info.SHA256)
		}
		return info, fmt.Errorf("storing release %s: %w", m.Version, err)
	}
	return info, syncDir(filepath.Join(s.Dir, "releases"))
}

func pad(n int64) int64 { return (512 - n%512) % 512 }

// headerBytes returns the tar header block(s) bundle.Write writes before an entry.
func headerBytes(name string, size int64) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(bundle.EntryHeader(name, size)); err != nil {
		return nil, fmt.Errorf("tar header of %s: %w", name, err)
	}
	return b.Bytes(), nil // not closed: Close would add the end of the archive
}

func emitEntry(emit func([]byte), name string, data []byte) error {
	hdr, err := headerBytes(name, int64(len(data)))
	if err != nil {
		return err
	}
	emit(hdr)
	emit(data)
	emit(make([]byte, pad(int64(len(data)))))
	return nil
}

func (s *Store) chunkPath(sum string) string {
	return filepath.Join(s.Dir, "chunks", sum[:2], sum)
}

func (s *Store) releaseDir(version string) string { return filepath.Join(s.Dir, "releases", version) }

// putChunk stores a chunk unless it is present and reports whether it was added.
func (s *Store) putChunk(sum string, data []byte) (bool, error) {
	p := s.chunkPath(sum)
	if _, err := os.Stat(p); err == nil {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return false, fmt.Errorf("storing chunk %s: %w", sum, err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := p + ".tmp-" + hex.EncodeToString(rnd[:])
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return false, fmt.Errorf("storing chunk %s: %w", sum, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("storing chunk %s: %w", sum, err)
	}
	return true, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// validVersion reports whether v can name a stored release (and a directory).
func validVersion(v string) bool {
	_, err := bundle.ParseVersion(v)
	return err == nil
}

// Info returns a stored release's description (ErrNotFound).
func (s *Store) Info(version string) (api.ReleaseInfo, error) {
	var info api.ReleaseInfo
	if !validVersion(version) {
		return info, fmt.Errorf("release %q: %w", version, ErrNotFound)
	}
	b, err := os.ReadFile(filepath.Join(s.releaseDir(version), infoFile))
	if errors.Is(err, os.ErrNotExist) {
		return info, fmt.Errorf("release %s: %w", version, ErrNotFound)
	}
	if err != nil {
		return info, fmt.Errorf("release %s: %w", version, err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("release %s: %s: %w", version, infoFile, err)
	}
	return info, nil
}

// List returns the stored releases, by version.
func (s *Store) List() ([]api.ReleaseInfo, error) {
	ents, err := os.ReadDir(filepath.Join(s.Dir, "releases"))
	if errors.Is(err, os.ErrNotExist) {
		return []api.ReleaseInfo{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing releases: %w", err)
	}
	out := []api.ReleaseInfo{}
	for _, e := range ents {
		if !e.IsDir() || !validVersion(e.Name()) {
			continue
		}
		info, err := s.Info(e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool {
		c, _ := bundle.CompareVersions(out[i].Version, out[j].Version)
		return c < 0
	})
	return out, nil
}

// File returns a small file of a release: bundle.ManifestFile or bundle.SignatureFile.
func (s *Store) File(version, name string) ([]byte, error) {
	if !validVersion(version) || (name != bundle.ManifestFile && name != bundle.SignatureFile) {
		return nil, fmt.Errorf("release %q file %q: %w", version, name, ErrNotFound)
	}
	b, err := os.ReadFile(filepath.Join(s.releaseDir(version), name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("release %s: %w", version, ErrNotFound)
	}
	return b, err
}

// Index returns the JSON chunk index of a part of a release (delta.Index).
func (s *Store) Index(version, part string) ([]byte, error) {
	if !validVersion(version) || !partRE.MatchString(part) {
		return nil, fmt.Errorf("release %q part %q: %w", version, part, ErrNotFound)
	}
	b, err := os.ReadFile(filepath.Join(s.releaseDir(version), indexPrefix+part+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("release %s part %s: %w", version, part, ErrNotFound)
	}
	return b, err
}

// Chunk opens a stored chunk by its sha256 (lower-case hex).
func (s *Store) Chunk(sum string) (*os.File, error) {
	if !sumRE.MatchString(sum) {
		return nil, fmt.Errorf("chunk %q: %w", sum, ErrNotFound)
	}
	f, err := os.Open(s.chunkPath(sum))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("chunk %s: %w", sum, ErrNotFound)
	}
	return f, err
}

// Bundle returns the whole bundle of a release, laid out from its stored pieces, as a
// ReadSeeker of info.Size bytes whose sha256 is info.SHA256. Close it after use.
func (s *Store) Bundle(version string) (*BundleReader, api.ReleaseInfo, error) {
	info, err := s.Info(version)
	if err != nil {
		return nil, info, err
	}
	mb, err := s.File(version, bundle.ManifestFile)
	if err != nil {
		return nil, info, err
	}
	sb, err := s.File(version, bundle.SignatureFile)
	if err != nil {
		return nil, info, err
	}
	m, err := bundle.ParseManifest(mb)
	if err != nil {
		return nil, info, fmt.Errorf("release %s: %w", version, err)
	}
	br := &BundleReader{s: s}
	add := func(b []byte) {
		if len(b) > 0 {
			br.segs = append(br.segs, segment{off: br.size, size: int64(len(b)), data: b})
			br.size += int64(len(b))
		}
	}
	addEntry := func(name string, data []byte) error {
		hdr, err := headerBytes(name, int64(len(data)))
		if err != nil {
			return err
		}
		add(hdr)
		add(data)
		add(make([]byte, pad(int64(len(data)))))
		return nil
	}
	if err := addEntry(bundle.ManifestFile, mb); err != nil {
		return nil, info, err
	}
	if err := addEntry(bundle.SignatureFile, sb); err != nil {
		return nil, info, err
	}
	for _, p := range m.Parts {
		ib, err := s.Index(version, p.Name)
		if err != nil {
			return nil, info, err
		}
		ix, err := delta.ParseIndex(ib, p.Name, p.Size, p.SHA256)
		if err != nil {
			return nil, info, fmt.Errorf("release %s: %w", version, err)
		}
		hdr, err := headerBytes(p.Name, p.Size)
		if err != nil {
			return nil, info, err
		}
		add(hdr)
		for _, c := range ix.Chunks {
			br.segs = append(br.segs, segment{off: br.size, size: c.Size, chunk: c.SHA256})
			br.size += c.Size
		}
		add(make([]byte, pad(p.Size)))
	}
	add(make([]byte, 2*512))
	if br.size != info.Size {
		return nil, info, fmt.Errorf("release %s: laid out in %d bytes, pushed as %d", version, br.size, info.Size)
	}
	br.ReadSeeker = io.NewSectionReader(br, 0, br.size)
	return br, info, nil
}

// BundleReader reads a stored bundle: an io.ReadSeeker and io.ReaderAt over its manifest,
// signature, tar headers and chunks.
type BundleReader struct {
	io.ReadSeeker
	s    *Store
	segs []segment
	size int64

	mu  sync.Mutex
	cur *os.File // the chunk last read from
	sum string
}

type segment struct {
	off, size int64
	data      []byte // inline bytes, or
	chunk     string // a chunk's sha256
}

// Size returns the bundle's size.
func (b *BundleReader) Size() int64 { return b.size }

// ReadAt implements io.ReaderAt.
func (b *BundleReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= b.size {
			return n, io.EOF
		}
		i := sort.Search(len(b.segs), func(i int) bool { return b.segs[i].off+b.segs[i].size > pos })
		sg := b.segs[i]
		in := pos - sg.off
		want := min(int64(len(p)-n), sg.size-in)
		if sg.data != nil {
			n += copy(p[n:n+int(want)], sg.data[in:in+want])
			continue
		}
		m, err := b.readChunk(sg.chunk, p[n:n+int(want)], in)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (b *BundleReader) readChunk(sum string, p []byte, off int64) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sum != sum {
		if b.cur != nil {
			b.cur.Close()
			b.cur = nil
		}
		f, err := b.s.Chunk(sum)
		if err != nil {
			return 0, err
		}
		b.cur, b.sum = f, sum
	}
	n, err := b.cur.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err == io.EOF {
		err = fmt.Errorf("chunk %s: shorter than its index says: %w", sum, io.ErrUnexpectedEOF)
	}
	return n, err
}

// Close closes the chunk file in use.
func (b *BundleReader) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur != nil {
		b.cur.Close()
		b.cur, b.sum = nil, ""
	}
	return nil
}
