package base

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/mbr"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// TestGoDiskfsMadeBase reads a base image written entirely by go-diskfs (FAT32 and ext4).
func TestGoDiskfsMadeBase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "diskfs.img")
	const mib = 1 << 20
	d, err := diskfs.Create(path, 100*mib, diskfs.SectorSizeDefault)
	mustDo(t, err)
	// (go-diskfs v1.9.4: a second Disk.Close panics, so no deferred Close here.)
	table := &mbr.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, Partitions: []*mbr.Partition{
		{Index: 1, Type: mbr.Fat32LBA, Start: 2048, Size: 40 * mib / 512},
		{Index: 2, Type: mbr.Linux, Start: 2048 + 40*mib/512, Size: 56 * mib / 512},
	}}
	mustDo(t, d.Partition(table))

	fat, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: "boot", Reproducible: true})
	mustDo(t, err)
	bootFiles := map[string][]byte{
		"config.txt":                []byte("arm_64bit=1\n"),
		"kernel8.img":               pseudoRandom(1<<20+5, 11),
		"overlays/vc4-kms-v3d.dtbo": pseudoRandom(3000, 12),
	}
	mustDo(t, fat.Mkdir("/overlays"))
	for p, data := range bootFiles {
		writeDiskfs(t, fat, "/"+p, data)
	}

	ext, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 2, FSType: filesystem.TypeExt4, VolumeLabel: "rootfs"})
	mustDo(t, err)
	rootFiles := map[string][]byte{
		"etc/hostname":   []byte("pi\n"),
		"usr/bin/sudo":   []byte("\x7fELF sudo"),
		"usr/lib/big.so": pseudoRandom(2<<20+9, 13),
	}
	mustDo(t, ext.Mkdir("etc"))
	mustDo(t, ext.Mkdir("usr/bin"))
	mustDo(t, ext.Mkdir("usr/lib"))
	for p, data := range rootFiles {
		writeDiskfs(t, ext, p, data)
	}
	mt := time.Unix(1600000000, 0)
	mustDo(t, ext.Chmod("usr/bin/sudo", 0o755|os.ModeSetuid))
	mustDo(t, ext.Chown("usr/bin/sudo", 0, 0))
	mustDo(t, ext.Chown("etc/hostname", 1000, 42))
	mustDo(t, ext.Chtimes("etc/hostname", mt, mt, mt))
	mustDo(t, ext.Symlink("usr/bin", "bin"))
	mustDo(t, d.Close())

	img, err := Open(path)
	mustDo(t, err)
	defer img.Close()
	if img.Table != "mbr" || img.Boot().Number != 1 || img.Root().Number != 2 {
		t.Fatalf("table %s partitions %+v", img.Table, img.Partitions)
	}
	bt, err := img.BootFiles()
	mustDo(t, err)
	for p, data := range bootFiles {
		got, err := bt.ReadFile(p)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("boot %s: %d bytes, err %v; want %d bytes", p, len(got), err, len(data))
		}
	}
	rt, err := img.RootFS(context.Background())
	mustDo(t, err)
	for p, data := range rootFiles {
		got, err := rt.ReadFile(p)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("root %s: %d bytes, err %v; want %d bytes", p, len(got), err, len(data))
		}
	}
	if e := rt.Get("usr/bin/sudo"); e == nil || e.Mode != 0o4755 {
		t.Errorf("usr/bin/sudo: %+v, want mode 4755", e)
	}
	if e := rt.Get("etc/hostname"); e == nil || e.UID != 1000 || e.GID != 42 || !e.ModTime.Equal(mt) {
		t.Errorf("etc/hostname: %+v, want 1000:42 at %v", e, mt)
	}
	if e := rt.Get("bin"); e == nil || e.Kind != tree.Symlink || e.Linkname != "usr/bin" {
		t.Errorf("bin: %+v, want a symlink to usr/bin", e)
	}
}

func writeDiskfs(t *testing.T, fs filesystem.FileSystem, p string, data []byte) {
	t.Helper()
	f, err := fs.OpenFile(p, os.O_CREATE|os.O_RDWR)
	mustDo(t, err)
	if _, err := f.Write(data); err != nil {
		t.Fatalf("writing %s: %v", p, err)
	}
	mustDo(t, f.Close())
}
