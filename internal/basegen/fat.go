package basegen

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// makeFAT writes t as a FAT32 filesystem labelled "bootfs" of size bytes to the new file out:
// mkfs.vfat with a fixed volume id and --invariant, then mmd and mcopy -m in the tree's sorted
// order, so directory entries and short names come out the same every time. Only regular
// files and directories can be stored.
func makeFAT(ctx context.Context, t *tree.Tree, work, out string, size int64, id ids, epoch time.Time) error {
	stage := filepath.Join(work, "bootfs")
	if err := os.Mkdir(stage, 0o700); err != nil {
		return fmt.Errorf("creating staging directory: %w", err)
	}
	// Each batch is a directory to make (files nil) or a run of files in one directory,
	// copied by one mcopy.
	type batch struct {
		dir   string
		files []string
	}
	var (
		batches []batch
		buf     = make([]byte, 1<<20)
	)
	err := t.Walk(func(e *tree.Entry) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := filepath.Join(stage, filepath.FromSlash(e.Path))
		switch e.Kind {
		case tree.Dir:
			if err := os.Mkdir(p, 0o700); err != nil {
				return fmt.Errorf("staging %s: %w", e.Path, err)
			}
			batches = append(batches, batch{dir: e.Path})
		case tree.Regular:
			if err := stageFile(p, e, buf); err != nil {
				return err
			}
			if err := os.Chtimes(p, e.ModTime, e.ModTime); err != nil {
				return fmt.Errorf("setting times of %s: %w", e.Path, err)
			}
			dir := path.Dir(e.Path)
			if dir == "." {
				dir = ""
			}
			if n := len(batches); n > 0 && batches[n-1].files != nil && batches[n-1].dir == dir {
				batches[n-1].files = append(batches[n-1].files, p)
			} else {
				batches = append(batches, batch{dir: dir, files: []string{p}})
			}
		default:
			return fmt.Errorf("boot partition: %s is a %s; FAT holds only files and directories", e.Path, e.Kind)
		}
		return nil
	})
	if err != nil {
		return err
	}

	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("creating %s: %w", out, err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sizing %s: %w", out, err)
	}
	sde := strconv.FormatInt(epoch.Unix(), 10)
	// --invariant fixes the boot sector's time-derived fields; -i after it sets our volume id.
	args := []string{"-F", "32", "-n", "bootfs", "--invariant", "-i", fmt.Sprintf("%08X", id.vfatID), "-h", strconv.Itoa(BootStartSector)}
	if size >= 256<<20 {
		args = append(args, "-s", "4") // 2 KiB clusters, as pi-gen makes them
	}
	if _, _, err := run(ctx, []string{"SOURCE_DATE_EPOCH=" + sde}, nil, "mkfs.vfat", append(args, out)...); err != nil {
		return fmt.Errorf("making the boot filesystem: %w", err)
	}
	rc := filepath.Join(work, "mtoolsrc")
	if err := os.WriteFile(rc, nil, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", rc, err)
	}
	env := []string{"SOURCE_DATE_EPOCH=" + sde, "MTOOLS_SKIP_CHECK=1", "MTOOLSRC=" + rc}
	for _, b := range batches {
		if b.files == nil {
			if _, _, err := run(ctx, env, nil, "mmd", "-i", out, "::/"+b.dir); err != nil {
				return fmt.Errorf("boot partition: creating %s: %w", b.dir, err)
			}
			continue
		}
		target := "::/"
		if b.dir != "" {
			target += b.dir + "/"
		}
		args := append([]string{"-i", out, "-m"}, b.files...)
		if _, _, err := run(ctx, env, nil, "mcopy", append(args, target)...); err != nil {
			return fmt.Errorf("boot partition: copying files into /%s: %w", b.dir, err)
		}
	}
	return nil
}
