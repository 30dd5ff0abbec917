package basegen

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// mke2fsConf pins the ext4 features instead of taking them from the host's /etc/mke2fs.conf.
// They are those of Raspberry Pi OS images (pi-gen turns off huge_file and 64bit).
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384
	reserved_ratio = 5.0
	lazy_itable_init = false
	lazy_journal_init = false
	no_discard = true

[fs_types]
	ext4 = {
		features = has_journal,extent,flex_bg,metadata_csum,dir_nlink,extra_isize
	}
`

// makeExt4 writes t as an ext4 filesystem of size bytes to the new file out, using work for
// scratch files. Unprivileged, in three steps:
//  1. stage the tree as a directory: regular files, directories, symlinks, hard links and
//     fifos, with their modes and mtimes (an ordinary user can make all of these);
//  2. mke2fs -d copies the staged directory into a new filesystem;
//  3. a debugfs script adds what a user cannot stage: owners, setuid/setgid bits, device
//     nodes, extended attributes (file capabilities), and fixes ctimes to the entries' mtimes.
func makeExt4(ctx context.Context, t *tree.Tree, work, out string, size int64, id ids, epoch time.Time) error {
	stage := filepath.Join(work, "rootfs")
	if err := os.Mkdir(stage, 0o700); err != nil {
		return fmt.Errorf("creating staging directory: %w", err)
	}
	script, err := stageRoot(ctx, t, stage, filepath.Join(work, "xattrs"), epoch)
	if err != nil {
		return err
	}
	conf := filepath.Join(work, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(mke2fsConf), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", conf, err)
	}
	env := []string{
		"MKE2FS_CONFIG=" + conf,
		"E2FSPROGS_FAKE_TIME=" + strconv.FormatInt(epoch.Unix(), 10),
		"SOURCE_DATE_EPOCH=" + strconv.FormatInt(epoch.Unix(), 10),
	}
	args := []string{"-q", "-t", "ext4", "-b", "4096", "-I", "256", "-L", "rootfs", "-U", id.rootUUID,
		"-E", "root_owner=0:0,hash_seed=" + id.hashSeed + ",nodiscard,lazy_itable_init=0"}
	// mke2fs gives one inode per 16 KiB; a tree of many tiny files needs more.
	if need := int64(t.Len())*5/4 + 1024; need > size/16384 {
		args = append(args, "-N", strconv.FormatInt(need, 10))
	}
	args = append(args, "-d", stage, out, strconv.FormatInt(size/1024, 10)+"k")
	if _, _, err := run(ctx, env, nil, "mke2fs", args...); err != nil {
		return fmt.Errorf("making the root filesystem: %w", err)
	}
	// The staged copy is no longer needed; free the disk space before the image is assembled.
	if err := os.RemoveAll(stage); err != nil {
		return fmt.Errorf("removing staging directory: %w", err)
	}
	cmds := filepath.Join(work, "debugfs.cmd")
	if err := os.WriteFile(cmds, []byte(script), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", cmds, err)
	}
	_, stderr, err := run(ctx, env, nil, "debugfs", "-w", "-f", cmds, out)
	if err != nil {
		return fmt.Errorf("setting owners and special files on the root filesystem: %w", err)
	}
	// debugfs reports failed commands on stderr but still exits 0.
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if l != "" && !strings.HasPrefix(l, "debugfs ") {
			return fmt.Errorf("setting owners and special files on the root filesystem: debugfs: %s", strings.TrimSpace(stderr))
		}
	}
	return nil
}

// stageRoot writes t below stage and returns the debugfs script that completes it.
func stageRoot(ctx context.Context, t *tree.Tree, stage, xattrDir string, epoch time.Time) (string, error) {
	var sc strings.Builder
	at := func(tm time.Time) string { return "@" + strconv.FormatInt(tm.Unix(), 10) }
	fmt.Fprintf(&sc, "sif / mode 040755\nsif / uid 0\nsif / gid 0\nsif / atime %s\nsif / mtime %s\nsif / ctime %s\n", at(epoch), at(epoch), at(epoch))
	if err := os.Chmod(stage, 0o755); err != nil {
		return "", fmt.Errorf("chmod %s: %w", stage, err)
	}
	var dirs []*tree.Entry
	buf := make([]byte, 1<<20)
	nx := 0
	err := t.Walk(func(e *tree.Entry) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := debugfsSafe(e.Path); err != nil {
			return err
		}
		p := filepath.Join(stage, filepath.FromSlash(e.Path))
		dp := "/" + e.Path
		// What the staged inode gets: the owner may always read, write and search, so that
		// mke2fs can read it and we can fill and remove it; debugfs restores the real mode.
		staged := e.Mode & 0o777
		switch e.Kind {
		case tree.Dir:
			staged |= 0o700
			if err := os.Mkdir(p, 0o700); err != nil {
				return fmt.Errorf("staging %s: %w", e.Path, err)
			}
			dirs = append(dirs, e)
		case tree.Regular:
			staged |= 0o600
			if err := stageFile(p, e, buf); err != nil {
				return err
			}
		case tree.FIFO:
			staged |= 0o600
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				return fmt.Errorf("staging fifo %s: %w", e.Path, err)
			}
		case tree.Symlink:
			if err := os.Symlink(e.Linkname, p); err != nil {
				return fmt.Errorf("staging symlink %s: %w", e.Path, err)
			}
			staged = e.Mode // mke2fs makes symlinks 0777 whatever we say
			fmt.Fprintf(&sc, "sif %s atime %s\nsif %s mtime %s\n", dp, at(e.ModTime), dp, at(e.ModTime))
		case tree.Hardlink:
			if err := os.Link(filepath.Join(stage, filepath.FromSlash(e.Linkname)), p); err != nil {
				return fmt.Errorf("staging hard link %s: %w", e.Path, err)
			}
			return nil // the inode is the target's: nothing more to set
		case tree.CharDev, tree.BlockDev:
			typ := "c"
			if e.Kind == tree.BlockDev {
				typ = "b"
			}
			// debugfs's mknod takes a name in the current directory, not a path.
			fmt.Fprintf(&sc, "cd /%s\nmknod %s %s %d %d\ncd /\n", path.Dir(e.Path), path.Base(e.Path), typ, e.Devmajor, e.Devminor)
			fmt.Fprintf(&sc, "sif %s atime %s\nsif %s mtime %s\nsif %s crtime %s\n", dp, at(e.ModTime), dp, at(e.ModTime), dp, at(epoch))
			staged = ^uint32(0) // always set the mode
		case tree.Socket:
			return nil // a socket in an image means nothing; tar skips them too
		default:
			return fmt.Errorf("staging %s: unknown kind %s", e.Path, e.Kind)
		}
		if e.Kind == tree.Regular || e.Kind == tree.FIFO {
			if err := syscall.Chmod(p, staged); err != nil {
				return fmt.Errorf("chmod %s: %w", e.Path, err)
			}
			if err := os.Chtimes(p, e.ModTime, e.ModTime); err != nil {
				return fmt.Errorf("setting times of %s: %w", e.Path, err)
			}
		}
		if staged != e.Mode || e.Mode&0o7000 != 0 {
			fmt.Fprintf(&sc, "sif %s mode 0%o\n", dp, typeBits(e.Kind)|e.Mode)
		}
		fmt.Fprintf(&sc, "sif %s uid %d\nsif %s gid %d\nsif %s ctime %s\n", dp, e.UID, dp, e.GID, dp, at(e.ModTime))
		if len(e.Xattrs) > 0 {
			names := make([]string, 0, len(e.Xattrs))
			for n := range e.Xattrs {
				names = append(names, n)
			}
			slices.Sort(names)
			for _, n := range names {
				if err := debugfsSafe(n); err != nil {
					return fmt.Errorf("%s: xattr %w", e.Path, err)
				}
				if nx == 0 {
					if err := os.Mkdir(xattrDir, 0o700); err != nil {
						return fmt.Errorf("creating xattr directory: %w", err)
					}
				}
				f := filepath.Join(xattrDir, strconv.Itoa(nx))
				nx++
				if err := os.WriteFile(f, e.Xattrs[n], 0o600); err != nil {
					return fmt.Errorf("writing xattr %s of %s: %w", n, e.Path, err)
				}
				if err := debugfsSafe(f); err != nil {
					return fmt.Errorf("xattr scratch file: %w", err)
				}
				fmt.Fprintf(&sc, "ea_set -f %s %s %s\n", f, dp, n)
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	// Directories last and deepest first: filling a directory changes its mtime.
	for i := len(dirs) - 1; i >= 0; i-- {
		e := dirs[i]
		p := filepath.Join(stage, filepath.FromSlash(e.Path))
		if err := syscall.Chmod(p, e.Mode&0o777|0o700); err != nil {
			return "", fmt.Errorf("chmod %s: %w", e.Path, err)
		}
		if err := os.Chtimes(p, e.ModTime, e.ModTime); err != nil {
			return "", fmt.Errorf("setting times of %s: %w", e.Path, err)
		}
	}
	return sc.String(), nil
}

func stageFile(p string, e *tree.Entry, buf []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("staging %s: %w", e.Path, err)
	}
	var n int64
	if e.Size > 0 {
		rc, err := e.Content.Open()
		if err != nil {
			f.Close()
			return fmt.Errorf("opening content of %s: %w", e.Path, err)
		}
		n, err = io.CopyBuffer(f, io.LimitReader(rc, e.Size), buf)
		rc.Close()
		if err != nil {
			f.Close()
			return fmt.Errorf("staging %s: %w", e.Path, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("staging %s: %w", e.Path, err)
	}
	if n != e.Size {
		return fmt.Errorf("staging %s: content has %d bytes, entry says %d", e.Path, n, e.Size)
	}
	return nil
}

// typeBits are the S_IFMT bits of an inode of kind k.
func typeBits(k tree.Kind) uint32 {
	switch k {
	case tree.Dir:
		return syscall.S_IFDIR
	case tree.Symlink:
		return syscall.S_IFLNK
	case tree.CharDev:
		return syscall.S_IFCHR
	case tree.BlockDev:
		return syscall.S_IFBLK
	case tree.FIFO:
		return syscall.S_IFIFO
	case tree.Socket:
		return syscall.S_IFSOCK
	}
	return syscall.S_IFREG
}

// debugfsSafe rejects names that debugfs's command parser would split or interpret.
func debugfsSafe(s string) error {
	if s == "" {
		return fmt.Errorf("empty name")
	}
	for _, r := range s {
		if r <= ' ' || r == '"' || r == '\\' || r == '#' || r == 0x7f {
			return fmt.Errorf("%q: names with spaces, quotes, backslashes, '#' or control characters are not supported", s)
		}
	}
	return nil
}

// estimateRootSize is the default root partition size: the space the tree's files and
// directories take in 4 KiB blocks, its inodes, plus 30 %, plus the journal, rounded up to
// 4 MiB.
func estimateRootSize(t *tree.Tree) int64 {
	var used, dirEntries int64
	_ = t.Walk(func(e *tree.Entry) error {
		used += 256 // inode
		dirEntries += int64(len(path.Base(e.Path))) + 16
		switch e.Kind {
		case tree.Regular:
			used += roundUp(e.Size, 4096)
			if e.Size > 128<<20 { // extent tree blocks
				used += e.Size / (128 << 20) * 4096
			}
		case tree.Dir:
			used += 4096
		case tree.Symlink:
			if len(e.Linkname) >= 60 {
				used += 4096
			}
		}
		return nil
	})
	used += roundUp(dirEntries, 4096)
	size := used * 13 / 10
	size += size / 64 // the inode tables mke2fs reserves (one 256-byte inode per 16 KiB)
	size += 64 << 20  // journal, bitmaps and group descriptors
	return max(roundUp(size, align), minRootSize)
}
