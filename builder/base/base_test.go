package base

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// checkRoot asserts that tr holds exactly the entries of ws with all their metadata and content.
func checkRoot(t *testing.T, tr *tree.Tree, ws []want) {
	t.Helper()
	seen := map[string]bool{}
	for _, w := range ws {
		seen[w.path] = true
		e := tr.Get(w.path)
		if e == nil {
			t.Errorf("%s: missing", w.path)
			continue
		}
		if e.Kind != w.kind {
			t.Errorf("%s: kind %s, want %s", w.path, e.Kind, w.kind)
			continue
		}
		if w.kind == tree.Hardlink {
			if e.Linkname != w.link {
				t.Errorf("%s: hard link to %q, want %q", w.path, e.Linkname, w.link)
			}
			continue
		}
		if e.Mode != w.mode || e.UID != w.uid || e.GID != w.gid {
			t.Errorf("%s: mode %04o uid %d gid %d, want %04o %d %d", w.path, e.Mode, e.UID, e.GID, w.mode, w.uid, w.gid)
		}
		if !e.ModTime.Equal(w.mtime) || e.ModTime.Location() != w.mtime.Location() {
			t.Errorf("%s: mtime %v, want %v", w.path, e.ModTime, w.mtime)
		}
		if w.kind == tree.Symlink && e.Linkname != w.link {
			t.Errorf("%s: symlink to %q, want %q", w.path, e.Linkname, w.link)
		}
		if e.Devmajor != w.major || e.Devminor != w.minor {
			t.Errorf("%s: device %d,%d, want %d,%d", w.path, e.Devmajor, e.Devminor, w.major, w.minor)
		}
		if len(e.Xattrs) != len(w.xattrs) {
			t.Errorf("%s: xattrs %q, want %q", w.path, e.Xattrs, w.xattrs)
		}
		for k, v := range w.xattrs {
			if string(e.Xattrs[k]) != v {
				t.Errorf("%s: xattr %s = %x, want %x", w.path, k, e.Xattrs[k], v)
			}
		}
		if w.kind == tree.Regular {
			if e.Size != int64(len(w.data)) {
				t.Errorf("%s: size %d, want %d", w.path, e.Size, len(w.data))
			}
			h, _ := hashContent(t, e)
			if h != sha(w.data) {
				t.Errorf("%s: content differs", w.path)
			}
		}
	}
	_ = tr.Walk(func(e *tree.Entry) error {
		if !seen[e.Path] {
			t.Errorf("%s: unexpected %s entry", e.Path, e.Kind)
		}
		return nil
	})
}

func checkBoot(t *testing.T, tr *tree.Tree, files []bootFile) {
	t.Helper()
	seen := map[string]bool{}
	for _, bf := range files {
		seen[bf.path] = true
		if d := filepath.Dir(bf.path); d != "." {
			seen[d] = true
			if e := tr.Get(d); e == nil || e.Kind != tree.Dir || e.Mode != 0o755 {
				t.Errorf("%s: want a 0755 directory, got %+v", d, e)
			}
		}
		e := tr.Get(bf.path)
		if e == nil {
			t.Errorf("%s: missing", bf.path)
			continue
		}
		if e.Kind != tree.Regular || e.Mode != 0o644 || e.UID != 0 || e.GID != 0 {
			t.Errorf("%s: %s %04o %d:%d, want a root:root 0644 file", bf.path, e.Kind, e.Mode, e.UID, e.GID)
		}
		if !e.ModTime.Equal(bf.mtime) {
			t.Errorf("%s: mtime %v, want %v", bf.path, e.ModTime, bf.mtime)
		}
		got, err := tr.ReadFile(bf.path)
		if err != nil {
			t.Errorf("%s: %v", bf.path, err)
		} else if !bytes.Equal(got, bf.data) {
			t.Errorf("%s: content differs (%d bytes, want %d)", bf.path, len(got), len(bf.data))
		}
	}
	_ = tr.Walk(func(e *tree.Entry) error {
		if !seen[e.Path] {
			t.Errorf("%s: unexpected %s entry in the boot files", e.Path, e.Kind)
		}
		return nil
	})
}

func TestReadBase(t *testing.T) {
	ws := rootSpec()
	root := makeExt4(t, ws, 64)
	for _, tc := range []struct {
		name, label, tableWant string
		fatBits                int
		types                  []string
	}{
		{"mbr-fat32", "dos", "mbr", 32, []string{"c", "83"}},
		{"gpt-fat16", "gpt", "gpt", 16, []string{"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := bootSpec()
			boot := makeFAT(t, files, tc.fatBits)
			path := assemble(t, tc.label, []string{boot, root}, tc.types)
			img, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if img.Table != tc.tableWant || len(img.Partitions) != 2 {
				t.Fatalf("table %s with %d partitions: %+v", img.Table, len(img.Partitions), img.Partitions)
			}
			p1, p2 := img.Partitions[0], img.Partitions[1]
			if p1.Number != 1 || p1.FS != FSVfat || p1.Start != 2048*512 || p2.Number != 2 || p2.FS != FSExt4 {
				t.Errorf("partitions: %+v", img.Partitions)
			}
			if tc.label == "dos" && (p1.Type != "0c" || p2.Type != "83") {
				t.Errorf("MBR types %q %q", p1.Type, p2.Type)
			}
			if tc.label == "gpt" && !strings.EqualFold(p2.Type, tc.types[1]) {
				t.Errorf("GPT type %q, want %s", p2.Type, tc.types[1])
			}
			if img.Boot() != p1 || img.Root() != p2 {
				t.Errorf("boot %+v root %+v", img.Boot(), img.Root())
			}
			bt, err := img.BootFiles()
			if err != nil {
				t.Fatal(err)
			}
			checkBoot(t, bt, files)
			rt, err := img.RootFS(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			checkRoot(t, rt, ws)
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		mustDo(t, os.WriteFile(p, b, 0o644))
		return p
	}
	ws := rootSpec()[:10]
	root := makeExt4(t, ws, 8)
	boot := makeFAT(t, bootSpec()[:2], 16)
	rootBytes, err := os.ReadFile(root)
	mustDo(t, err)
	bootBytes, err := os.ReadFile(boot)
	mustDo(t, err)

	noFAT := assemble(t, "dos", []string{root}, []string{"83"})
	noExt := assemble(t, "dos", []string{boot}, []string{"c"})
	extFirst := assemble(t, "dos", []string{root, boot}, []string{"83", "c"})
	good := assemble(t, "dos", []string{boot, root}, []string{"c", "83"})
	goodBytes, err := os.ReadFile(good)
	mustDo(t, err)
	st, err := os.Stat(good)
	mustDo(t, err)
	_ = st
	// The root partition ends 1 MiB before the end of the file: cutting 2 MiB truncates it.
	truncated := write("truncated.img", goodBytes[:len(goodBytes)-2<<20])

	mbrOnly := make([]byte, 1<<20)
	copy(mbrOnly, goodBytes[:512])

	for _, tc := range []struct {
		name, path string
		want       []string
		notImage   bool
	}{
		{"missing", filepath.Join(dir, "nope.img"), []string{"nope.img"}, false},
		{"empty", write("empty.img", nil), []string{"empty.img", "empty file"}, true},
		{"random", write("random.img", pseudoRandom(1<<20, 1)), []string{"random.img", "no MBR or GPT partition table"}, true},
		{"bare ext4", root, []string{"root.ext4", "bare ext filesystem"}, true},
		{"bare FAT", boot, []string{"boot.vfat", "bare FAT filesystem"}, true},
		{"no FAT", noFAT, []string{"base.img: no FAT partition"}, false},
		{"no ext4", noExt, []string{"base.img: no ext4 root partition"}, false},
		{"ext4 before FAT", extFirst, []string{"base.img: no ext4 root partition"}, false},
		{"truncated", truncated, []string{"truncated.img: partition 2", "beyond the end of the file"}, false},
		{"mbr beyond EOF", write("mbronly.img", mbrOnly), []string{"mbronly.img: partition 1", "beyond the end of the file"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := Open(tc.path)
			if err == nil {
				img.Close()
				t.Fatal("Open succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if errors.Is(err, ErrNotDiskImage) != tc.notImage {
				t.Errorf("errors.Is(%q, ErrNotDiskImage) = %v", err, !tc.notImage)
			}
		})
	}
	_ = rootBytes
	_ = bootBytes
}
