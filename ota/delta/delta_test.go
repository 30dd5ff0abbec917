package delta

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/otatest"
)

const mib = 1 << 20

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// edit returns b with n bytes at off replaced by m new bytes (seed): the data after it moves.
func edit(b []byte, off, n, m int, seed uint64) []byte {
	out := append([]byte{}, b[:off]...)
	out = append(out, randBytes(seed, m)...)
	return append(out, b[off+n:]...)
}

// The fixture shared with the other OTA tests.
var (
	randBytes = otatest.RandBytes
	fakeFAT   = otatest.FakeFAT
)

const (
	cmdA = otatest.CmdA
	cmdB = otatest.CmdB
)

func key(t testing.TB) (ed25519.PrivateKey, ed25519.PublicKey) { return otatest.Key(t, 1) }

// release is a signed release as the fleet stores it: the full bundle, its manifest and
// signature, and each part's bytes and index.
type release struct {
	version  string
	boot     []byte
	system   []byte
	full     []byte
	manifest []byte
	sig      []byte
	m        *bundle.Manifest
	idx      map[string]*Index
}

const cmdOff = 100000

func makeRelease(t testing.TB, sk ed25519.PrivateKey, version string, boot, system []byte) *release {
	src := func(name string, b []byte) bundle.Source {
		return bundle.Source{Name: name, Size: int64(len(b)), Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
	}
	bs := src(bundle.PartBoot, boot)
	bs.Patch = &bundle.Patch{Offset: cmdOff, From: "a", Slots: map[string]string{"a": cmdA, "b": cmdB}}
	var buf bytes.Buffer
	m, err := bundle.Write(&buf, bundle.Manifest{Name: "demo", Version: version, Board: "rpi4", LayoutVersion: 1, MinVersion: "0"},
		sk, []bundle.Source{bs, src(bundle.PartSystem, system)})
	must(t, err)
	r := &release{version: version, boot: boot, system: system, full: buf.Bytes(), m: m, idx: map[string]*Index{}}
	// What the fleet server does with a pushed bundle: keep the signed bytes, index the parts.
	tr := tar.NewReader(bytes.NewReader(r.full))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		switch h.Name {
		case bundle.ManifestFile:
			r.manifest, err = io.ReadAll(tr)
		case bundle.SignatureFile:
			r.sig, err = io.ReadAll(tr)
		default:
			r.idx[h.Name], err = Split(h.Name, tr)
		}
		must(t, err)
	}
	for _, p := range m.Parts {
		if r.idx[p.Name].SHA256 != p.SHA256 {
			t.Fatalf("index of %s: sha256 %s, manifest %s", p.Name, r.idx[p.Name].SHA256, p.SHA256)
		}
	}
	return r
}

// memSource serves chunks from parts it holds, counting the fetches.
type memSource struct {
	mu      sync.Mutex
	chunks  map[string][]byte
	fetches map[string]int
	bad     map[string]bool // answer these with wrong bytes
	fail    func(n int) error
	n       int
}

func newSource(t testing.TB, parts ...[]byte) *memSource {
	s := &memSource{chunks: map[string][]byte{}, fetches: map[string]int{}, bad: map[string]bool{}}
	for _, p := range parts {
		must(t, Chunks(bytes.NewReader(p), func(off int64, data []byte) error {
			s.chunks[sum(data)] = bytes.Clone(data)
			return nil
		}))
	}
	return s
}

func (s *memSource) Chunk(ctx context.Context, sha string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.fetches[sha]++
	if s.fail != nil {
		if err := s.fail(s.n); err != nil {
			return nil, err
		}
	}
	b, ok := s.chunks[sha]
	if !ok {
		return nil, fmt.Errorf("chunk %s: %w", sha, ErrNotFound)
	}
	if s.bad[sha] {
		b = bytes.Clone(b)
		b[len(b)/2] ^= 1
	}
	return b, nil
}

func haveOf(t testing.TB, parts map[string][]byte) *Have {
	h := NewHave()
	for name, p := range parts {
		must(t, h.Scan(context.Background(), name, bytes.NewReader(p), int64(len(p))))
	}
	return h
}

func readStream(t testing.TB, r *release, have *Have, inPlace map[string]io.ReaderAt, src ChunkSource) ([]byte, Counts, error) {
	t.Helper()
	rc, st, err := Stream(context.Background(), r.manifest, r.sig, r.m, r.idx, have, inPlace, src)
	must(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return b, st.Counts(), err
}

func TestSplitDeterministic(t *testing.T) {
	data := randBytes(1, 7*mib+123)
	a, err := Split("system", bytes.NewReader(data))
	must(t, err)
	b, err := Split("system", iotestHalfReader(bytes.NewReader(data)))
	must(t, err)
	ja, err := a.Marshal()
	must(t, err)
	jb, err := b.Marshal()
	must(t, err)
	if !bytes.Equal(ja, jb) {
		t.Fatal("two splits of the same bytes differ")
	}
	if a.SHA256 != sum(data) || a.Size != int64(len(data)) {
		t.Fatalf("index sha256 %s size %d", a.SHA256, a.Size)
	}
	if len(a.Chunks) < 7*mib/MaxChunk || len(a.Chunks) > 7*mib/MinChunk+1 {
		t.Fatalf("%d chunks", len(a.Chunks))
	}
	var off int64
	for i, c := range a.Chunks {
		if c.SHA256 != sum(data[off:off+c.Size]) {
			t.Fatalf("chunk %d's sha256 is not of its bytes", i)
		}
		off += c.Size
	}
	if _, err := ParseIndex(ja, "system", a.Size, a.SHA256); err != nil {
		t.Fatal(err)
	}
	// Content-defined: inserting 100 bytes early in the part changes only the chunks
	// around the insertion.
	c, err := Split("system", bytes.NewReader(edit(data, 1*mib, 0, 100, 7)))
	must(t, err)
	old := map[string]bool{}
	for _, ch := range a.Chunks {
		old[ch.SHA256] = true
	}
	var changed int64
	for _, ch := range c.Chunks {
		if !old[ch.SHA256] {
			changed += ch.Size
		}
	}
	if changed > 2*MaxChunk {
		t.Fatalf("a 100-byte insertion changed %d bytes of chunks", changed)
	}
}

// iotestHalfReader returns short reads, to show that chunk boundaries do not depend on them.
func iotestHalfReader(r io.Reader) io.Reader { return halfReader{r} }

type halfReader struct{ r io.Reader }

func (h halfReader) Read(b []byte) (int, error) {
	if len(b) > 1 {
		b = b[:(len(b)+1)/2]
	}
	return h.r.Read(b)
}

func TestParseIndexRejects(t *testing.T) {
	ix, err := Split("boot", bytes.NewReader(randBytes(3, 3*mib)))
	must(t, err)
	good, err := ix.Marshal()
	must(t, err)
	cases := map[string]struct {
		b         []byte
		part      string
		size      int64
		sha, want string
	}{
		"other part":    {good, "system", ix.Size, ix.SHA256, "index is of part boot"},
		"other size":    {good, "boot", ix.Size + 1, ix.SHA256, "index is of part boot"},
		"other sha":     {good, "boot", ix.Size, strings.Repeat("0", 64), "index is of part boot"},
		"trailing data": {append(bytes.Clone(good), ' ', '{', '}'), "boot", ix.Size, ix.SHA256, "data after"},
		"unknown field": {bytes.Replace(good, []byte(`"format"`), []byte(`"x":1,"format"`), 1), "boot", ix.Size, ix.SHA256, "unknown field"},
		"format":        {bytes.Replace(good, []byte(`"format":1`), []byte(`"format":2`), 1), "boot", ix.Size, ix.SHA256, "format 2"},
		"upper-case":    {bytes.Replace(good, []byte(ix.Chunks[0].SHA256), []byte(strings.ToUpper(ix.Chunks[0].SHA256)), 1), "boot", ix.Size, ix.SHA256, "hex"},
		"small chunk":   {bytes.Replace(good, []byte(fmt.Sprintf(`"size":%d`, ix.Chunks[0].Size)), []byte(`"size":100`), 1), "boot", ix.Size, ix.SHA256, "outside"},
		"sizes don't add up": {bytes.Replace(good, []byte(fmt.Sprintf(`{"size":%d`, ix.Chunks[1].Size)), []byte(fmt.Sprintf(`{"size":%d`, ix.Chunks[1].Size+1)), 1),
			"boot", ix.Size, ix.SHA256, "add up"},
		"too big": {make([]byte, MaxIndex+1), "boot", ix.Size, ix.SHA256, "at most"},
	}
	for name, c := range cases {
		if _, err := ParseIndex(c.b, c.part, c.size, c.sha); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", name, err, c.want)
		}
	}
}

func FuzzParseIndex(f *testing.F) {
	ix, err := Split("system", bytes.NewReader(randBytes(4, 2*mib)))
	must(f, err)
	good, err := ix.Marshal()
	must(f, err)
	f.Add(good, ix.Size, ix.SHA256)
	f.Add([]byte(`{"format":1,"part":"system","size":0,"sha256":"`+strings.Repeat("a", 64)+`","chunks":[]}`), int64(0), strings.Repeat("a", 64))
	f.Add([]byte(`{"format":1,"part":"system","size":5,"sha256":"`+strings.Repeat("a", 64)+`","chunks":[{"size":5,"sha256":"`+strings.Repeat("b", 64)+`"}]}`), int64(5), strings.Repeat("a", 64))
	f.Add([]byte(`{"chunks":null}`), int64(0), "")
	f.Add([]byte(`[]`), int64(-1), "x")
	f.Fuzz(func(t *testing.T, b []byte, size int64, sha string) {
		ix, err := ParseIndex(b, "system", size, sha)
		if err != nil {
			return
		}
		if ix.Part != "system" || ix.Size != size || ix.SHA256 != sha {
			t.Fatalf("accepted an index of %s/%d/%s", ix.Part, ix.Size, ix.SHA256)
		}
		var total int64
		for i, c := range ix.Chunks {
			if c.Size <= 0 || c.Size > MaxChunk || (c.Size < MinChunk && i != len(ix.Chunks)-1) || len(c.SHA256) != 64 {
				t.Fatalf("accepted chunk %d: %+v", i, c)
			}
			total += c.Size
		}
		if total != size {
			t.Fatalf("accepted chunks adding up to %d, size %d", total, size)
		}
		// An accepted index re-encodes to an index that parses the same.
		again, err := ix.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseIndex(again, "system", size, sha); err != nil {
			t.Fatal(err)
		}
	})
}

// Two releases: release 2 changes a few hundred KiB in the middle of the system part
// (with a size change, so the rest moves) and a few bytes of the boot part.
func twoReleases(t testing.TB) (r1, r2 *release) {
	sk, _ := key(t)
	boot1 := fakeFAT(1, 1*mib+4096, cmdOff)
	sys1 := randBytes(2, 9*mib+777)
	boot2 := bytes.Clone(boot1)
	copy(boot2[700000:], "a new kernel")
	sys2 := edit(sys1, 4*mib+5, 300<<10, 333<<10, 3)
	return makeRelease(t, sk, "1", boot1, sys1), makeRelease(t, sk, "2", boot2, sys2)
}

func TestStream(t *testing.T) {
	r1, r2 := twoReleases(t)
	total := int64(len(r2.boot) + len(r2.system))

	t.Run("all remote", func(t *testing.T) {
		src := newSource(t, r2.boot, r2.system)
		got, c, err := readStream(t, r2, nil, nil, src)
		must(t, err)
		if !bytes.Equal(got, r2.full) {
			t.Fatal("the stream differs from bundle.Write's bundle")
		}
		if c.Downloaded != total || c.Reused() != 0 || c.Total != total {
			t.Fatalf("counts %+v, total %d", c, total)
		}
	})
	t.Run("all local", func(t *testing.T) {
		have := haveOf(t, map[string][]byte{"boot-a": r2.boot, "system-a": r2.system})
		got, c, err := readStream(t, r2, have, nil, nil)
		must(t, err)
		if !bytes.Equal(got, r2.full) {
			t.Fatal("the stream differs from bundle.Write's bundle")
		}
		if c.Local != total || c.Downloaded != 0 {
			t.Fatalf("counts %+v", c)
		}
	})
	t.Run("mixed", func(t *testing.T) {
		// The active slot is longer than the part (a whole partition).
		have := haveOf(t, map[string][]byte{"boot-a": r1.boot, "system-a": append(bytes.Clone(r1.system), randBytes(9, 3*mib)...)})
		src := newSource(t, r2.boot, r2.system)
		got, c, err := readStream(t, r2, have, nil, src)
		must(t, err)
		if !bytes.Equal(got, r2.full) {
			t.Fatal("the stream differs from bundle.Write's bundle")
		}
		if c.Downloaded+c.Local != total || c.Downloaded > 6*MaxChunk || c.Downloaded < 333<<10 {
			t.Fatalf("counts %+v: want about the changed bytes downloaded", c)
		}
		t.Logf("downloaded %d of %d bytes (%d chunks)", c.Downloaded, total, c.DownloadedChunks)
	})
	t.Run("in place", func(t *testing.T) {
		// An interrupted install left the first 5 MiB of the system part in slot B.
		dst := make([]byte, 16*mib)
		copy(dst, r2.system[:5*mib])
		src := newSource(t, r2.boot, r2.system)
		got, c, err := readStream(t, r2, nil, map[string]io.ReaderAt{bundle.PartSystem: bytes.NewReader(dst)}, src)
		must(t, err)
		if !bytes.Equal(got, r2.full) {
			t.Fatal("the stream differs from bundle.Write's bundle")
		}
		if c.InPlace < 4*mib || c.InPlace > 5*mib || c.InPlace+c.Downloaded != total {
			t.Fatalf("counts %+v", c)
		}
	})
	t.Run("corrupted local chunk", func(t *testing.T) {
		sys := bytes.Clone(r2.system)
		have := haveOf(t, map[string][]byte{"boot-a": r2.boot, "system-a": sys})
		sys[2*mib] ^= 0xff // after the scan: the card's bytes changed
		src := newSource(t, r2.boot, r2.system)
		got, c, err := readStream(t, r2, have, nil, src)
		must(t, err)
		if !bytes.Equal(got, r2.full) {
			t.Fatal("the stream differs from bundle.Write's bundle")
		}
		if c.DownloadedChunks != 1 || c.Downloaded+c.Local != total {
			t.Fatalf("counts %+v: want the one corrupted chunk downloaded", c)
		}
	})
	t.Run("wrong fetched bytes", func(t *testing.T) {
		src := newSource(t, r2.boot, r2.system)
		bad := r2.idx[bundle.PartSystem].Chunks[3].SHA256
		src.bad[bad] = true
		_, _, err := readStream(t, r2, haveOf(t, map[string][]byte{"boot-a": r2.boot}), nil, src)
		if err == nil || !strings.Contains(err.Error(), "part system chunk 3") || !strings.Contains(err.Error(), bad) {
			t.Fatalf("got %v, want an error naming system chunk 3", err)
		}
		if src.fetches[bad] != 2 {
			t.Fatalf("the bad chunk was fetched %d times, want 2", src.fetches[bad])
		}
		t.Log(err)
	})
	t.Run("one bad answer is retried", func(t *testing.T) {
		src := newSource(t, r2.boot, r2.system)
		src.fail = func(n int) error {
			if n == 2 {
				return errors.New("connection reset")
			}
			return nil
		}
		got, _, err := readStream(t, r2, nil, nil, src)
		must(t, err)
		if !bytes.Equal(got, r2.full) {
			t.Fatal("the stream differs from bundle.Write's bundle")
		}
	})
	t.Run("missing chunk", func(t *testing.T) {
		src := newSource(t, r2.boot)
		_, _, err := readStream(t, r2, nil, nil, src)
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "part system chunk 0") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestStreamRejectsArguments(t *testing.T) {
	r1, r2 := twoReleases(t)
	ctx := context.Background()
	if _, _, err := Stream(ctx, r1.manifest, r2.sig, r2.m, r2.idx, nil, nil, nil); err == nil {
		t.Error("accepted another release's manifest.json")
	}
	if _, _, err := Stream(ctx, r2.manifest, r2.sig, r2.m, map[string]*Index{bundle.PartBoot: r2.idx[bundle.PartBoot]}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "no index for part system") {
		t.Errorf("missing index: %v", err)
	}
	if _, _, err := Stream(ctx, r2.manifest, r2.sig, r2.m, map[string]*Index{bundle.PartBoot: r2.idx[bundle.PartBoot], bundle.PartSystem: r1.idx[bundle.PartSystem]}, nil, nil, nil); err == nil {
		t.Error("accepted release 1's system index for release 2")
	}
}

// An index whose chunks are not the part (the server lies) yields a bundle that fails
// the whole-part hash check of bundle.Reader.
func TestStreamLyingIndex(t *testing.T) {
	_, r2 := twoReleases(t)
	_, pk := key(t)
	ix := *r2.idx[bundle.PartSystem]
	ix.Chunks = slices.Clone(ix.Chunks)
	ix.Chunks[1], ix.Chunks[2] = ix.Chunks[2], ix.Chunks[1]
	idx := map[string]*Index{bundle.PartBoot: r2.idx[bundle.PartBoot], bundle.PartSystem: &ix}
	rc, _, err := Stream(context.Background(), r2.manifest, r2.sig, r2.m, idx, nil, nil, newSource(t, r2.boot, r2.system))
	must(t, err)
	defer rc.Close()
	br, err := bundle.Open(rc, bundle.NewKeyring(pk))
	must(t, err)
	for {
		_, pr, err := br.Next()
		if err != nil {
			t.Fatalf("got %v before the hash mismatch", err)
		}
		if _, err := io.Copy(io.Discard, pr); err != nil {
			if !errors.Is(err, bundle.ErrHashMismatch) {
				t.Fatalf("got %v, want a hash mismatch", err)
			}
			return
		}
	}
}

func TestStreamClose(t *testing.T) {
	_, r2 := twoReleases(t)
	rc, _, err := Stream(context.Background(), r2.manifest, r2.sig, r2.m, r2.idx, nil, nil, newSource(t, r2.boot, r2.system))
	must(t, err)
	if _, err := io.ReadFull(rc, make([]byte, 2*mib)); err != nil {
		t.Fatal(err)
	}
	must(t, rc.Close()) // returns once the writer goroutine ended
	if _, err := rc.Read(make([]byte, 10)); err == nil {
		t.Fatal("read after Close")
	}
}
