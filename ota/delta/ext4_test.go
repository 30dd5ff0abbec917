package delta

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/ext4img"
	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// sysFile is a file of a synthetic system: size bytes of a seeded ChaCha8 stream
// (incompressible, like compressed container image layers).
type sysFile struct {
	path string
	size int64
	seed uint64
}

// systemFiles returns nBig image-like tars of minBig..maxBig bytes and nSmall small files
// (up to smallMax bytes) spread over 100 directories; seeds and sizes are fixed by the
// arguments.
func systemFiles(nBig int, minBig, maxBig int64, nSmall int, smallMax int64) []sysFile {
	r := rand.New(rand.NewPCG(2024, 11))
	var fs []sysFile
	for i := range nBig {
		fs = append(fs, sysFile{fmt.Sprintf("var/lib/edgeimg/images/image%02d.tar", i), minBig + r.Int64N(maxBig-minBig+1), uint64(1000 + i)})
	}
	for i := range nSmall {
		fs = append(fs, sysFile{fmt.Sprintf("usr/lib/d%02d/f%05d", i%100, i), r.Int64N(smallMax + 1), uint64(100000 + i)})
	}
	return fs
}

func chachaReader(seed uint64, size int64) io.Reader {
	var k [32]byte
	binary.LittleEndian.PutUint64(k[:], seed)
	return io.LimitReader(rand.NewChaCha8(k), size)
}

// writeSystem writes the files as an ext4 file system (builder/ext4img, as the builder does,
// with a UUID and an epoch of the release) into a sparse file at path and returns the file
// system's size: the system part.
func writeSystem(t testing.TB, path string, files []sysFile, version string) int64 {
	t.Helper()
	epoch := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if version == "2" {
		epoch = epoch.Add(24 * time.Hour) // a new SOURCE_DATE_EPOCH: every inode's times change
	}
	tr := tree.New()
	var total int64
	for _, f := range files {
		f := f
		err := tr.Put(&tree.Entry{Path: f.path, Kind: tree.Regular, Mode: 0o644, ModTime: epoch, Size: f.size,
			Content: tree.Func(func() (io.ReadCloser, error) { return io.NopCloser(chachaReader(f.seed, f.size)), nil })})
		must(t, err)
		total += f.size
	}
	out, err := os.Create(path)
	must(t, err)
	defer out.Close()
	max := (total + total/8 + 64<<20) &^ (ext4img.BlockSize - 1)
	must(t, out.Truncate(max))
	h := sha256.Sum256([]byte("system " + version))
	var uuid [16]byte
	copy(uuid[:], h[:])
	info, err := ext4img.Write(context.Background(), tr, out, 0, max, ext4img.Options{Partition: "system " + version, UUID: uuid, Epoch: epoch})
	must(t, err)
	return info.Size
}

// figures are what a device on release 1 downloads to get release 2's system part.
type figures struct {
	full        int64 // bytes of the full bundle
	part        int64 // bytes of the system part
	downloaded  int64 // chunks fetched by the delta stream
	fixed       int64 // fixed-block baseline: 256 KiB blocks of the new part not in the old one
	chunks      int   // chunks of the new part
	fetched     int   // of which fetched
	streamBytes time.Duration
}

// measure scans the old image as a device scans its active slot, indexes the new one as the
// fleet does, runs the delta stream with a source reading the new image, checks the streamed
// part's sha256, and measures the fixed-block baseline.
func measure(t testing.TB, oldPath string, oldSize int64, newPath string, newSize int64) figures {
	t.Helper()
	ctx := context.Background()
	oldF, err := os.Open(oldPath)
	must(t, err)
	defer oldF.Close()
	newF, err := os.Open(newPath)
	must(t, err)
	defer newF.Close()

	ix, err := Split(bundle.PartSystem, io.NewSectionReader(newF, 0, newSize))
	must(t, err)
	// A boot part (a manifest needs one) the releases share.
	boot := randBytes(5, 1<<20)
	bootIx, err := Split(bundle.PartBoot, bytes.NewReader(boot))
	must(t, err)
	have := NewHave()
	must(t, have.Scan(ctx, "system-a", oldF, oldSize))
	must(t, have.Scan(ctx, "boot-a", bytes.NewReader(boot), int64(len(boot))))

	// The fleet: chunks by sha256, read from the new image.
	src := &imageSource{at: map[string]imageChunk{}}
	src.add(newF, ix)
	src.add(bytes.NewReader(boot), bootIx)
	m := &bundle.Manifest{Format: bundle.FormatVersion, Name: "bench", Version: "2", Board: "rpi4", LayoutVersion: 1, MinVersion: "0",
		Parts: []bundle.Part{{Name: bundle.PartBoot, Size: bootIx.Size, SHA256: bootIx.SHA256}, {Name: bundle.PartSystem, Size: newSize, SHA256: ix.SHA256}}}
	mb, err := m.Marshal()
	must(t, err)
	start := time.Now()
	rc, st, err := Stream(ctx, mb, []byte(`{"keyid":"bench"}`), m, map[string]*Index{bundle.PartBoot: bootIx, bundle.PartSystem: ix}, have, nil, src)
	must(t, err)
	defer rc.Close()
	cr := &countReader{r: rc}
	tr := tar.NewReader(cr)
	var partSum string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		hh := sha256.New()
		_, err = io.Copy(hh, tr)
		must(t, err)
		if h.Name == bundle.PartSystem {
			partSum = hex.EncodeToString(hh.Sum(nil))
		}
	}
	_, err = io.Copy(io.Discard, cr)
	must(t, err)
	if partSum != ix.SHA256 {
		t.Fatalf("the streamed system part has sha256 %s, want %s", partSum, ix.SHA256)
	}
	c := st.Counts()
	return figures{full: cr.n, part: newSize, downloaded: c.Downloaded, fixed: fixedBlocks(t, oldF, oldSize, newF, newSize),
		chunks: len(ix.Chunks), fetched: c.DownloadedChunks, streamBytes: time.Since(start)}
}

// fixedBlocks is the baseline: both parts cut into 256 KiB blocks at multiples of 256 KiB
// (4 KiB-aligned, like the file system's blocks); the device downloads the new part's blocks
// whose sha256 is not among the old part's.
func fixedBlocks(t testing.TB, oldF io.ReaderAt, oldSize int64, newF io.ReaderAt, newSize int64) int64 {
	const block = 256 << 10
	buf := make([]byte, block)
	each := func(r io.ReaderAt, size int64, fn func([32]byte, int64)) {
		for off := int64(0); off < size; off += block {
			n := min(block, size-off)
			_, err := r.ReadAt(buf[:n], off)
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			fn(sha256.Sum256(buf[:n]), n)
		}
	}
	old := map[[32]byte]bool{}
	each(oldF, oldSize, func(s [32]byte, _ int64) { old[s] = true })
	var dl int64
	each(newF, newSize, func(s [32]byte, n int64) {
		if !old[s] {
			dl += n
		}
	})
	return dl
}

// imageSource serves the chunks of images by sha256 (offsets and sizes from their indexes).
type imageSource struct {
	at map[string]imageChunk
}

type imageChunk struct {
	r         io.ReaderAt
	off, size int64
}

func (s *imageSource) add(r io.ReaderAt, ix *Index) {
	var off int64
	for _, c := range ix.Chunks {
		s.at[c.SHA256] = imageChunk{r, off, c.Size}
		off += c.Size
	}
}

func (s *imageSource) Chunk(ctx context.Context, sum string) ([]byte, error) {
	c, ok := s.at[sum]
	if !ok {
		return nil, fmt.Errorf("chunk %s: %w", sum, ErrNotFound)
	}
	b := make([]byte, c.size)
	if _, err := c.r.ReadAt(b, c.off); err != nil {
		return nil, err
	}
	return b, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// releasePair writes release 1 and release 2 system images in dir: release 2 replaces file
// `changed` with other contents of newSize bytes.
func releasePair(t testing.TB, dir string, files []sysFile, changed int, newSize int64) (old string, oldSize int64, nw string, nwSize int64) {
	old, nw = filepath.Join(dir, "system1.img"), filepath.Join(dir, "system2.img")
	oldSize = writeSystem(t, old, files, "1")
	files2 := append([]sysFile{}, files...)
	files2[changed] = sysFile{files[changed].path, newSize, 777777}
	nwSize = writeSystem(t, nw, files2, "2")
	return old, oldSize, nw, nwSize
}

// TestDeltaExt4 is the property at a small scale: a 64 MB system in which one 8 MB
// file is replaced by a larger one; the device downloads the new file and little else.
func TestDeltaExt4(t *testing.T) {
	files := systemFiles(5, 8<<20, 12<<20, 400, 64<<10)
	changed := 2
	files[changed].size = 8 << 20
	newSize := files[changed].size + 300<<10 + 123
	old, oldSize, nw, nwSize := releasePair(t, t.TempDir(), files, changed, newSize)
	f := measure(t, old, oldSize, nw, nwSize)
	ratio := float64(f.downloaded) / float64(f.full)
	t.Logf("system %d MiB, file %d -> %d bytes: delta downloads %d bytes (%.3f of the full bundle, %d of %d chunks); fixed 256 KiB blocks %d bytes (%.3f)",
		f.part>>20, files[changed].size, newSize, f.downloaded, ratio, f.fetched, f.chunks, f.fixed, float64(f.fixed)/float64(f.full))
	if f.downloaded < newSize {
		t.Fatalf("downloaded %d bytes, less than the %d new bytes of the changed file", f.downloaded, newSize)
	}
	if ratio > 0.3 {
		t.Fatalf("the delta download is %.2f of the full bundle", ratio)
	}
}
