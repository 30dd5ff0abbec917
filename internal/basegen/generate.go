package basegen

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Generate writes a Raspberry Pi OS bookworm-like base image to outPath: a sparse raw disk
// with an MBR (disk signature DiskID(o.Seed)), partition 1 FAT32 "bootfs" at 4 MiB holding
// BootTree(o), and partition 2 ext4 "rootfs" holding RootTree(o). It needs no privileges and
// no network, only mke2fs and debugfs (e2fsprogs), mkfs.vfat (dosfstools), mmd and mcopy
// (mtools) and sfdisk (fdisk). The same options give the same bytes. Scratch files live in a
// temporary directory next to outPath, which is replaced only when the image is complete.
func Generate(ctx context.Context, outPath string, o Options) error {
	if err := o.validate(); err != nil {
		return err
	}
	o = o.withDefaults()
	id := deriveIDs(o.Seed)
	gen := newGenerator(o.Seed)

	// 1. The two file trees.
	root, err := rootTree(o, id, gen)
	if err != nil {
		return fmt.Errorf("building the root tree: %w", err)
	}
	boot, err := bootTree(o, id, gen)
	if err != nil {
		return fmt.Errorf("building the boot tree: %w", err)
	}

	// 2. The layout.
	rootSize := o.RootSize
	if rootSize == 0 {
		rootSize = estimateRootSize(root)
	}
	l := newLayout(o.BootSize, rootSize)

	work, err := os.MkdirTemp(filepath.Dir(outPath), ".basegen-")
	if err != nil {
		return fmt.Errorf("creating a work directory: %w", err)
	}
	defer os.RemoveAll(work)

	// 3. The filesystems, each in its own file.
	rootImg := filepath.Join(work, "rootfs.ext4")
	if err := makeExt4(ctx, root, work, rootImg, l.rootSize, id, o.Epoch); err != nil {
		return fmt.Errorf("partition 2 (rootfs): %w", err)
	}
	bootImg := filepath.Join(work, "bootfs.vfat")
	if err := makeFAT(ctx, boot, work, bootImg, l.bootSize, id, o.Epoch); err != nil {
		return fmt.Errorf("partition 1 (bootfs): %w", err)
	}

	// 4. The disk: partition table, then the filesystems copied in sparsely.
	disk := filepath.Join(work, "disk.img")
	if err := assemble(ctx, disk, l, id, bootImg, rootImg); err != nil {
		return fmt.Errorf("assembling %s: %w", outPath, err)
	}
	if err := os.Rename(disk, outPath); err != nil {
		return fmt.Errorf("moving the image to %s: %w", outPath, err)
	}
	return nil
}

func assemble(ctx context.Context, disk string, l layout, id ids, bootImg, rootImg string) error {
	f, err := os.OpenFile(disk, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(l.total); err != nil {
		return fmt.Errorf("sizing: %w", err)
	}
	if err := writeTable(ctx, disk, l, id); err != nil {
		return err
	}
	if err := copySparse(ctx, f, l.bootStart, bootImg); err != nil {
		return fmt.Errorf("copying partition 1: %w", err)
	}
	if err := copySparse(ctx, f, l.rootStart, rootImg); err != nil {
		return fmt.Errorf("copying partition 2: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing: %w", err)
	}
	return f.Close()
}
