package tree

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
)

func TestFromTarRoundTrip(t *testing.T) {
	mt := Epoch(1700000000)
	src := New()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(src.WriteFile("etc/passwd", []byte("root:x:0:0\n"), 0o644, mt))
	must(src.Put(&Entry{Path: "usr/bin/sudo", Kind: Regular, Mode: 0o4755, UID: 0, GID: 0, ModTime: mt, Size: 4, Content: Bytes("sudo")}))
	must(src.Put(&Entry{Path: "usr/bin/ping", Kind: Regular, Mode: 0o755, ModTime: mt, Size: 4, Content: Bytes("ping"),
		Xattrs: map[string][]byte{"security.capability": {1, 0, 0, 2, 0, 0x20, 0, 0}}}))
	must(src.Put(&Entry{Path: "usr/bin/aping", Kind: Hardlink, Linkname: "usr/bin/ping", ModTime: mt}))
	must(src.Symlink("usr/bin", "bin", mt))
	must(src.Put(&Entry{Path: "dev/null", Kind: CharDev, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mt}))
	must(src.Put(&Entry{Path: "dev/sda", Kind: BlockDev, Mode: 0o660, GID: 6, Devmajor: 8, ModTime: mt}))
	must(src.Put(&Entry{Path: "run/fifo", Kind: FIFO, Mode: 0o600, UID: 1000, GID: 1000, ModTime: mt.Add(123)}))
	must(src.Put(&Entry{Path: "tmp", Kind: Dir, Mode: 0o1777, ModTime: mt}))

	var buf bytes.Buffer
	if _, err := src.WriteTar(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := FromTar(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if got.Len() != src.Len() {
		t.Errorf("%d entries, want %d", got.Len(), src.Len())
	}
	_ = src.Walk(func(w *Entry) error {
		e := got.Get(w.Path)
		if e == nil {
			t.Errorf("%s: missing", w.Path)
			return nil
		}
		if e.Kind != w.Kind || e.Mode != w.Mode || e.UID != w.UID || e.GID != w.GID || !e.ModTime.Equal(w.ModTime) ||
			e.Size != w.Size || e.Linkname != w.Linkname || e.Devmajor != w.Devmajor || e.Devminor != w.Devminor ||
			len(e.Xattrs) != len(w.Xattrs) {
			t.Errorf("%s: got %+v, want %+v", w.Path, e, w)
		}
		for k, v := range w.Xattrs {
			if !bytes.Equal(e.Xattrs[k], v) {
				t.Errorf("%s: xattr %s = %x, want %x", w.Path, k, e.Xattrs[k], v)
			}
		}
		if e.Kind == Regular {
			if _, ok := e.Content.(Section); !ok {
				t.Errorf("%s: content is %T, want a Section of the archive", w.Path, e.Content)
			}
			a, _ := src.ReadFile(w.Path)
			b, err := got.ReadFile(w.Path)
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("%s: content %q (%v), want %q", w.Path, b, err, a)
			}
		}
		return nil
	})
}

func tarOf(t testing.TB, hdrs ...*tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func TestFromTarSpecialCases(t *testing.T) {
	// A socket marked by the PAX record, and a hard link that comes before its target.
	b := tarOf(t,
		&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		&tar.Header{Name: "run/sock", Typeflag: tar.TypeFifo, Mode: 0o755, Format: tar.FormatPAX, PAXRecords: map[string]string{SocketPAXKey: "1"}},
		&tar.Header{Name: "a/link", Typeflag: tar.TypeLink, Linkname: "z/file"},
		&tar.Header{Name: "z/file", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3},
	)
	tr, err := FromTar(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if e := tr.Get("run/sock"); e == nil || e.Kind != Socket {
		t.Errorf("run/sock: %+v, want a socket", e)
	}
	if e := tr.Get("a/link"); e == nil || e.Kind != Hardlink || e.Linkname != "z/file" {
		t.Errorf("a/link: %+v, want a hard link to z/file", e)
	}
	// Truncated data is an error, never a short file.
	if _, err := FromTar(bytes.NewReader(b), int64(len(b))-1024-512); err == nil {
		t.Error("truncated archive accepted")
	}
	// A hard link to nothing is an error.
	bad := tarOf(t, &tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "missing"})
	if _, err := FromTar(bytes.NewReader(bad), int64(len(bad))); err == nil {
		t.Error("dangling hard link accepted")
	}
}

func FuzzFromTar(f *testing.F) {
	f.Add(tarOf(f, &tar.Header{Name: "f", Typeflag: tar.TypeReg, Size: 5, Mode: 0o644},
		&tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "f"},
		&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Format: tar.FormatPAX, PAXRecords: map[string]string{"SCHILY.xattr.user.x": "y"}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := FromTar(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		_ = tr.Walk(func(e *Entry) error {
			if e.Kind == Regular && e.Content != nil {
				rc, err := e.Content.Open()
				if err != nil {
					t.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, rc)
				if n != e.Size {
					t.Fatalf("%s: %d bytes, entry says %d", e.Path, n, e.Size)
				}
			}
			return nil
		})
	})
}
