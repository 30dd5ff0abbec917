package releases_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/fleet/releases"
	"github.com/edgeimg/edgeimg/fleet/releases/releasetest"
	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/delta"
)

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestPutServeDedup(t *testing.T) {
	ctx := context.Background()
	key := releasetest.Key(1)
	keys := releasetest.Keyring(key)
	st := &releases.Store{Dir: t.TempDir()}
	now := time.Unix(1700000000, 0)

	boot := releasetest.Data(1, 300<<10)
	sys := releasetest.Data(2, 4<<20)
	b1 := releasetest.Bundle(t, key, "1", boot, sys)
	info, err := st.Put(ctx, bytes.NewReader(b1), keys, now)
	if err != nil {
		t.Fatal(err)
	}
	if info.SHA256 != sum(b1) || info.Size != int64(len(b1)) {
		t.Fatalf("info %+v: want sha256 %s size %d", info, sum(b1), len(b1))
	}
	if info.NewBytes != int64(len(boot)+len(sys)) || info.PartsSize != info.NewBytes || info.Chunks < 3 {
		t.Fatalf("first push: %+v", info)
	}

	// The same bundle again: idempotent.
	again, err := st.Put(ctx, bytes.NewReader(b1), keys, now.Add(time.Hour))
	if err != nil || again != info {
		t.Fatalf("re-push: %+v, %v; want %+v", again, err, info)
	}
	// Another bundle with the same version: refused.
	other := releasetest.Bundle(t, key, "1", boot, releasetest.Data(3, 1<<20))
	if _, err := st.Put(ctx, bytes.NewReader(other), keys, now); !errors.Is(err, releases.ErrConflict) {
		t.Fatalf("conflicting push: %v, want ErrConflict", err)
	}

	// Version 2 changes 100 bytes in the middle of the system part: few new chunk bytes.
	sys2 := bytes.Clone(sys)
	copy(sys2[2<<20:], bytes.Repeat([]byte{0xee}, 100))
	b2 := releasetest.Bundle(t, key, "2", boot, sys2)
	info2, err := st.Put(ctx, bytes.NewReader(b2), keys, now)
	if err != nil {
		t.Fatal(err)
	}
	if info2.NewBytes <= 0 || info2.NewBytes > 2*delta.MaxChunk {
		t.Fatalf("second release added %d new bytes of %d: chunks not shared", info2.NewBytes, info2.PartsSize)
	}
	t.Logf("release 2: %d of %d bytes new, %d chunks", info2.NewBytes, info2.PartsSize, info2.Chunks)

	// Served bundle: the pushed bytes.
	br, binfo, err := st.Bundle("2")
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if sum(got) != sum(b2) || binfo.SHA256 != sum(b2) {
		t.Fatalf("served bundle sha256 %s, pushed %s", sum(got), sum(b2))
	}
	// Ranges across pieces.
	for _, r := range [][2]int64{{0, 10}, {500, 2000}, {int64(len(b2)) - 3000, 3000}, {1 << 20, 1 << 20}} {
		p := make([]byte, r[1])
		if _, err := br.ReadAt(p, r[0]); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, b2[r[0]:r[0]+r[1]]) {
			t.Fatalf("ReadAt(%d, %d) differs", r[0], r[1])
		}
	}
	// Index and chunks of the system part.
	m, err := bundle.ParseManifest(mustFile(t, st, "2", bundle.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	p := m.Part(bundle.PartSystem)
	ib, err := st.Index("2", bundle.PartSystem)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := delta.ParseIndex(ib, p.Name, p.Size, p.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	var part []byte
	for _, c := range ix.Chunks {
		f, err := st.Chunk(c.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(f)
		f.Close()
		part = append(part, b...)
	}
	if !bytes.Equal(part, sys2) {
		t.Fatal("chunks do not make up the system part")
	}
	list, err := st.List()
	if err != nil || len(list) != 2 || list[0].Version != "1" || list[1].Version != "2" {
		t.Fatalf("List: %+v, %v", list, err)
	}
}

func mustFile(t *testing.T, st *releases.Store, v, name string) []byte {
	t.Helper()
	b, err := st.File(v, name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPutRefused(t *testing.T) {
	ctx := context.Background()
	key := releasetest.Key(1)
	dir := t.TempDir()
	st := &releases.Store{Dir: dir}
	b := releasetest.Bundle(t, key, "3", releasetest.Data(1, 1000), releasetest.Data(2, 300<<10))

	if _, err := st.Put(ctx, bytes.NewReader(b), releasetest.Keyring(releasetest.Key(2)), time.Now()); !errors.Is(err, bundle.ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	bad := bytes.Clone(b)
	bad[len(bad)-2048] ^= 1 // in the system part
	if _, err := st.Put(ctx, bytes.NewReader(bad), releasetest.Keyring(key), time.Now()); !errors.Is(err, bundle.ErrHashMismatch) {
		t.Fatalf("corrupt part: %v", err)
	}
	if _, err := st.Put(ctx, bytes.NewReader(b[:len(b)/2]), releasetest.Keyring(key), time.Now()); !errors.Is(err, bundle.ErrTruncated) {
		t.Fatalf("truncated: %v", err)
	}
	// Nothing of the refused pushes is a release.
	ents, _ := os.ReadDir(filepath.Join(dir, "releases"))
	if len(ents) != 0 {
		t.Fatalf("refused pushes left %v", ents)
	}
	if _, err := st.Info("3"); !errors.Is(err, releases.ErrNotFound) {
		t.Fatalf("Info after refused pushes: %v", err)
	}
}

// FuzzPut pushes damaged bundles: each is refused, or stored and served back as the
// bundle its info describes.
func FuzzPut(f *testing.F) {
	key := releasetest.Key(1)
	good := releasetest.Bundle(f, key, "4", releasetest.Data(1, 700), releasetest.Data(2, 1500)) // small: cheap to minimize
	f.Add(good, 0, byte(0))
	f.Add(good, 148, byte(1))  // the manifest's header checksum
	f.Add(good, 600, byte(1))  // the manifest
	f.Add(good, 1100, byte(7)) // the signature
	f.Add(good[:5000], 0, byte(0))
	f.Fuzz(func(t *testing.T, b []byte, at int, x byte) {
		b = bytes.Clone(b)
		if len(b) > 0 {
			at = ((at % len(b)) + len(b)) % len(b)
			b[at] ^= x
		}
		st := &releases.Store{Dir: t.TempDir()}
		info, err := st.Put(context.Background(), bytes.NewReader(b), releasetest.Keyring(key), time.Unix(0, 0))
		if err != nil {
			return
		}
		br, binfo, err := st.Bundle(info.Version)
		if err != nil {
			t.Fatal(err)
		}
		defer br.Close()
		got, err := io.ReadAll(br)
		if err != nil {
			t.Fatal(err)
		}
		if sum(got) != info.SHA256 || binfo != info || int64(len(got)) != info.Size {
			t.Fatalf("served %d bytes, sha256 %s; info %+v", len(got), sum(got), info)
		}
	})
}
