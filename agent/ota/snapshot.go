package ota

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/k3s"
)

// K3sSnapshotDir holds the snapshot of the K3s state taken before an update (relative to
// device.Paths.Root, on the data partition like the state it copies). K3s does not support
// downgrades: a newer K3s may migrate its datastore, certificates and credentials in ways an
// older one cannot read, so a rolled-back release needs them as they were.
//
// Layout: files/ mirrors the root (files/var/lib/rancher/k3s/server/db/…) and snapshot.json
// (snapshotIndex) lists what the snapshot holds. The directory appears whole or not at all:
// it is made under a temporary name, synced, and renamed into place.
const K3sSnapshotDir = "var/lib/edgeimg/ota/k3s-snapshot"

// k3sSnapshotPaths is the K3s state a newer K3s could migrate beyond an older one's reach:
// the datastore (kine's SQLite state.db and its WAL, or embedded etcd), the cluster CA and
// certificates, the credentials (passwd, ipsec), the join tokens, the admin kubeconfig and the
// node password. Besides these, every file directly in agent/ is snapshotted (the agent's
// client and serving certificates, keys and kubeconfigs; K3sSnapshotAgentDir).
//
// Not snapshotted: what the image ships (agent/images, server/manifests, server/static), the
// extracted K3s binaries (data/), containerd's content store and snapshots (agent/containerd:
// gigabytes of images that the air-gap archives import again) and files K3s rewrites at every
// start (agent/etc, server/etc).
var k3sSnapshotPaths = []string{
	device.K3sDataDir + "/server/db",
	device.K3sDataDir + "/server/tls",
	device.K3sDataDir + "/server/cred",
	device.K3sDataDir + "/server/token",
	device.K3sDataDir + "/server/node-token",
	device.K3sDataDir + "/server/agent-token",
	device.K3sKubeconfig,
	device.K3sNodeDir,
}

// K3sSnapshotAgentDir is the directory whose files (not subdirectories) are snapshotted too.
const K3sSnapshotAgentDir = device.K3sDataDir + "/agent"

// ErrNoSnapshot is wrapped by Restore when there is no snapshot.
var ErrNoSnapshot = errors.New("no K3s snapshot")

// snapshotIndex is K3sSnapshotDir/snapshot.json.
type snapshotIndex struct {
	// Format is 1.
	Format int `json:"format"`
	// Taken is when the snapshot was taken.
	Taken time.Time `json:"taken"`
	// K3sVersion is the version of the K3s the image shipped then (k3s.json), "" without K3s.
	K3sVersion string `json:"k3sVersion,omitempty"`
	// Paths are the paths (relative to the root) the snapshot holds, sorted. Empty when K3s had
	// no state yet: Restore then removes the state K3s made since.
	Paths []string `json:"paths"`
}

// Suffixes of the names Restore works under next to a path it replaces.
const (
	restoreNewSuffix = ".edgeimg-restore"
	restoreOldSuffix = ".edgeimg-old"
)

// Snapshot copies the K3s state an update could migrate irreversibly (k3sSnapshotPaths and the
// files of K3sSnapshotAgentDir) into K3sSnapshotDir, replacing an older snapshot, so that a
// rollback can Restore it. K3s is stopped while its files are copied (both units, so the
// datastore is closed and consistent) and the units that were active are started again
// afterwards, whether the copy worked or not: the updater reboots into the trial soon after,
// and what K3s writes meanwhile is not in the snapshot. r runs systemctl as agent/k3s does.
//
// Modes, owners (when running as root; best effort otherwise), modification times and
// symbolic links are kept; sparse files are copied whole; sockets and devices are skipped.
// Every file and directory is fsynced before the snapshot is renamed into place: a power cut
// leaves the old snapshot or none (never a partial one), and a temporary directory that the
// next Snapshot or DropSnapshot removes.
//
// An image without K3s, or a K3s that never ran, has nothing to snapshot: Snapshot records an
// empty snapshot, and systemctl is not run when the image has no K3s.
func Snapshot(ctx context.Context, p device.Paths, r k3s.Runner) (err error) {
	installed := k3s.Installed(p)
	if installed {
		var active []string
		for _, u := range []string{k3s.ServerUnit, k3s.AgentUnit} {
			// is-active exits 0 only for an active unit; anything else counts as stopped.
			if r.Run(ctx, "systemctl", "is-active", "--quiet", u) == nil {
				active = append(active, u)
			}
		}
		if err := r.Run(ctx, "systemctl", "stop", k3s.ServerUnit, k3s.AgentUnit); err != nil {
			return fmt.Errorf("stopping K3s for the snapshot: %w", err)
		}
		if len(active) > 0 {
			defer func() {
				// The caller's context may be ending: K3s is started again regardless.
				if serr := r.Run(context.WithoutCancel(ctx), "systemctl", append([]string{"start"}, active...)...); serr != nil {
					err = errors.Join(err, fmt.Errorf("starting K3s again after the snapshot: %w", serr))
				}
			}()
		}
	}
	if err := takeSnapshot(p, installed); err != nil {
		return fmt.Errorf("snapshotting the K3s state: %w", err)
	}
	return nil
}

func takeSnapshot(p device.Paths, installed bool) error {
	final := p.Path(K3sSnapshotDir)
	parent := filepath.Dir(final)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return err
	}
	if err := removeSnapshotTemps(parent); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(final)+".tmp")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	idx := snapshotIndex{Format: 1, Taken: time.Now().UTC(), Paths: []string{}}
	if installed {
		idx.K3sVersion = installedK3sVersion(p)
	}
	live, err := liveK3sPaths(p)
	if err != nil {
		return err
	}
	var total int64
	for _, rel := range live {
		n, err := treeSize(p.Path(rel))
		if err != nil {
			return err
		}
		total += n
	}
	if err := checkFreeSpace(parent, total); err != nil {
		return err
	}
	// Synced with snapshot.json's rename; each directory made below syncs its parent.
	files := filepath.Join(tmp, "files")
	if err := os.Mkdir(files, 0o700); err != nil {
		return err
	}
	for _, rel := range live {
		if _, err := os.Lstat(p.Path(rel)); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return err
		}
		if err := mirrorParents(p.Path(""), files, rel); err != nil {
			return err
		}
		if err := copyTree(p.Path(rel), filepath.Join(files, rel)); err != nil {
			return err
		}
		if err := device.SyncDir(filepath.Dir(filepath.Join(files, rel))); err != nil {
			return err
		}
		idx.Paths = append(idx.Paths, rel)
	}
	b, _ := json.MarshalIndent(idx, "", "  ")
	if err := device.WriteFileAtomic(filepath.Join(tmp, "snapshot.json"), append(b, '\n'), 0o600); err != nil {
		return err
	}
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	ok = true
	return device.SyncDir(parent)
}

// Restore puts the K3s state of the snapshot back, for a release rolled back to: it stops
// K3s, replaces each snapshotted path with the snapshot's copy, removes the tracked paths the
// snapshot did not have (the state a newer K3s made since; the node password excepted, which
// identifies the node to its server), and starts the unit of the role applied (role.json), if
// any. Each path is copied next to its place first and then renamed over it, so a power cut
// leaves every path either old or restored, and since the snapshot stays until DropSnapshot,
// running Restore again finishes the job. No snapshot is an error wrapping ErrNoSnapshot.
func Restore(ctx context.Context, p device.Paths, r k3s.Runner) error {
	idx, err := loadSnapshotIndex(p)
	if err != nil {
		return err
	}
	installed := k3s.Installed(p)
	if installed {
		if err := r.Run(ctx, "systemctl", "stop", k3s.ServerUnit, k3s.AgentUnit); err != nil {
			return fmt.Errorf("stopping K3s to restore its snapshot: %w", err)
		}
	}
	live, err := liveK3sPaths(p)
	if err != nil {
		return fmt.Errorf("restoring the K3s snapshot: %w", err)
	}
	tracked := slices.Concat(live, idx.Paths)
	slices.Sort(tracked)
	files := p.Path(path.Join(K3sSnapshotDir, "files"))
	// Each path's copy is made before the path it replaces is removed: the largest one must fit.
	var largest int64
	for _, rel := range idx.Paths {
		n, err := treeSize(filepath.Join(files, rel))
		if err != nil {
			return fmt.Errorf("restoring the K3s snapshot: %w", err)
		}
		largest = max(largest, n)
	}
	if err := checkFreeSpace(p.Path(device.K3sDataDir), largest); err != nil {
		return fmt.Errorf("restoring the K3s snapshot: %w", err)
	}
	for _, rel := range slices.Compact(tracked) {
		if err := restorePath(p, files, rel, slices.Contains(idx.Paths, rel)); err != nil {
			return fmt.Errorf("restoring the K3s snapshot: %w", err)
		}
	}
	if !installed {
		return nil
	}
	role, err := k3s.LoadApplied(p)
	if err != nil || role == nil {
		return err
	}
	unit := k3s.Unit(role.Role.Kind)
	if err := r.Run(ctx, "systemctl", "start", unit); err != nil {
		return fmt.Errorf("starting %s after restoring the K3s snapshot: %w", unit, err)
	}
	return nil
}

// restorePath makes rel as the snapshot has it (inSnapshot), or removes it.
func restorePath(p device.Paths, files, rel string, inSnapshot bool) error {
	dst := p.Path(rel)
	newPath, oldPath := dst+restoreNewSuffix, dst+restoreOldSuffix
	for _, leftover := range []string{newPath, oldPath} {
		if err := os.RemoveAll(leftover); err != nil {
			return err
		}
	}
	_, err := os.Lstat(dst)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if !inSnapshot {
		if !exists || rel == device.K3sNodeDir {
			return nil
		}
		if err := os.Rename(dst, oldPath); err != nil {
			return err
		}
		if err := device.SyncDir(filepath.Dir(dst)); err != nil {
			return err
		}
		return os.RemoveAll(oldPath)
	}
	if err := mirrorParents(files, p.Path(""), rel); err != nil {
		return err
	}
	if err := copyTree(filepath.Join(files, rel), newPath); err != nil {
		return err
	}
	if exists {
		if err := os.Rename(dst, oldPath); err != nil {
			return err
		}
	}
	if err := os.Rename(newPath, dst); err != nil {
		return err
	}
	if err := device.SyncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	return os.RemoveAll(oldPath)
}

// HasSnapshot reports whether a complete K3s snapshot exists.
func HasSnapshot(p device.Paths) bool {
	_, err := os.Stat(p.Path(path.Join(K3sSnapshotDir, "snapshot.json")))
	return err == nil
}

// DropSnapshot removes the K3s snapshot (after a commit, or a refused update) and what an
// interrupted Snapshot left. No snapshot is not an error.
func DropSnapshot(p device.Paths) error {
	final := p.Path(K3sSnapshotDir)
	parent := filepath.Dir(final)
	if _, err := os.Stat(parent); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.RemoveAll(final); err != nil {
		return fmt.Errorf("dropping the K3s snapshot: %w", err)
	}
	if err := removeSnapshotTemps(parent); err != nil {
		return fmt.Errorf("dropping the K3s snapshot: %w", err)
	}
	return device.SyncDir(parent)
}

func loadSnapshotIndex(p device.Paths) (*snapshotIndex, error) {
	file := p.Path(path.Join(K3sSnapshotDir, "snapshot.json"))
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w to restore (%s is missing)", ErrNoSnapshot, file)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the K3s snapshot: %w", err)
	}
	var idx snapshotIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if idx.Format != 1 {
		return nil, fmt.Errorf("%s: format %d, not 1", file, idx.Format)
	}
	for _, rel := range idx.Paths {
		if !snapshotPathAllowed(rel) {
			return nil, fmt.Errorf("%s: %q is not a path a K3s snapshot holds", file, rel)
		}
	}
	return &idx, nil
}

// snapshotPathAllowed reports whether rel is one of the paths a snapshot may hold: Restore
// never writes anywhere else, whatever snapshot.json says.
func snapshotPathAllowed(rel string) bool {
	if slices.Contains(k3sSnapshotPaths, rel) {
		return true
	}
	dir, name := path.Split(rel)
	return dir == K3sSnapshotAgentDir+"/" && name != "" && name != "." && name != ".." &&
		!strings.HasSuffix(name, restoreNewSuffix) && !strings.HasSuffix(name, restoreOldSuffix)
}

// liveK3sPaths lists the paths a snapshot tracks, as they are now: k3sSnapshotPaths and the
// files (anything but directories) in K3sSnapshotAgentDir, sorted. It removes what an
// interrupted Restore left in K3sSnapshotAgentDir.
func liveK3sPaths(p device.Paths) ([]string, error) {
	out := slices.Clone(k3sSnapshotPaths)
	entries, err := os.ReadDir(p.Path(K3sSnapshotAgentDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, restoreNewSuffix) || strings.HasSuffix(name, restoreOldSuffix) {
			if err := os.RemoveAll(filepath.Join(p.Path(K3sSnapshotAgentDir), name)); err != nil {
				return nil, err
			}
			continue
		}
		if !e.IsDir() {
			out = append(out, K3sSnapshotAgentDir+"/"+name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// removeSnapshotTemps removes the temporary directories of interrupted snapshots.
func removeSnapshotTemps(parent string) error {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "."+path.Base(K3sSnapshotDir)+".tmp") {
			if err := os.RemoveAll(filepath.Join(parent, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// snapshotReserve is the free space a snapshot or a restore leaves on the data partition at
// least, for what keeps running meanwhile (the journal, the agent's state).
const snapshotReserve = 32 << 20

// checkFreeSpace fails when the filesystem of dir (or of its nearest existing parent) has
// less than need bytes free beyond snapshotReserve.
func checkFreeSpace(dir string, need int64) error {
	for {
		if _, err := os.Stat(dir); err == nil || filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	free := st.Bavail * uint64(st.Bsize)
	if uint64(need)+snapshotReserve > free {
		return fmt.Errorf("not enough free space on the filesystem of %s for the K3s state: it needs %d MiB (and %d MiB to spare), %d MiB are free",
			dir, (need+1<<20-1)>>20, snapshotReserve>>20, free>>20)
	}
	return nil
}

// treeSize is the size of the regular files of path (a file or a directory), 0 if it does not
// exist. Sparse files count whole, as they are copied.
func treeSize(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// installedK3sVersion returns the version in the image's k3s.json, or "".
func installedK3sVersion(p device.Paths) string {
	b, err := os.ReadFile(p.Path(device.K3sInfo))
	if err != nil {
		return ""
	}
	var info struct {
		Version string `json:"version"`
	}
	_ = json.Unmarshal(b, &info)
	return info.Version
}

// mirrorParents makes the missing parent directories of rel under dstRoot with the modes,
// owners and times of the same directories under srcRoot.
func mirrorParents(srcRoot, dstRoot, rel string) error {
	dirs := strings.Split(path.Dir(rel), "/")
	for i := range dirs {
		sub := filepath.Join(dirs[:i+1]...)
		dst := filepath.Join(dstRoot, sub)
		if _, err := os.Lstat(dst); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		fi, err := os.Lstat(filepath.Join(srcRoot, sub))
		if err != nil {
			return err
		}
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
		if err := setMeta(dst, fi); err != nil {
			return err
		}
		if err := device.SyncDir(filepath.Dir(dst)); err != nil {
			return err
		}
	}
	return nil
}

// copyTree copies src to dst (which must not exist): a regular file, a symbolic link, or a
// directory and everything in it, fsyncing each file and directory. Other kinds of files
// (sockets, pipes, devices) are skipped.
func copyTree(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
		return chown(dst, fi)
	case fi.IsDir():
		// Owner-writable while it is filled; its mode is set afterwards.
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
		entries, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := copyTree(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
				return err
			}
		}
		if err := setMeta(dst, fi); err != nil {
			return err
		}
		return device.SyncDir(dst)
	case fi.Mode().IsRegular():
		return copyFile(src, dst, fi)
	}
	return nil
}

func copyFile(src, dst string, fi fs.FileInfo) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("syncing %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return setMeta(dst, fi)
}

// setMeta gives path (not a symbolic link) fi's owner, mode and modification time.
func setMeta(path string, fi fs.FileInfo) error {
	if err := chown(path, fi); err != nil {
		return err
	}
	// After chown, which clears the set-id bits.
	if err := os.Chmod(path, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	return os.Chtimes(path, fi.ModTime(), fi.ModTime())
}

// chown gives path (or the link itself) fi's owner; only root must succeed.
func chown(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if err := os.Lchown(path, int(st.Uid), int(st.Gid)); err != nil && os.Geteuid() == 0 {
		return err
	}
	return nil
}
