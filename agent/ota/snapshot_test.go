package ota

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/k3s"
)

// snapRunner records the commands run; units in active are what systemctl is-active finds
// running.
type snapRunner struct {
	active map[string]bool
	calls  []string
}

func (r *snapRunner) Run(_ context.Context, name string, args ...string) error {
	r.calls = append(r.calls, name+" "+strings.Join(args, " "))
	if name == "systemctl" && len(args) == 3 && args[0] == "is-active" {
		if !r.active[args[2]] {
			return fmt.Errorf("systemctl is-active: exit status 3")
		}
	}
	return nil
}

func (r *snapRunner) took() []string {
	c := r.calls
	r.calls = nil
	return c
}

// snapFile writes a file under the root (making its parents) with mode, owner and time.
func snapFile(t *testing.T, p device.Paths, rel, content string, mode os.FileMode, uid int) {
	t.Helper()
	f := p.Path(rel)
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, mode); err != nil {
		t.Fatal(err)
	}
	if uid >= 0 {
		if err := os.Lchown(f, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(f, when, when); err != nil {
		t.Fatal(err)
	}
}

// dumpTree describes every file under the root but the snapshot's (type, mode, owner when
// running as root, content or link target, and a file's modification time).
func dumpTree(t *testing.T, p device.Paths) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(p.Root, func(f string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(p.Root, f)
		if rel == filepath.FromSlash("var/lib/edgeimg/ota") {
			return filepath.SkipDir
		}
		fi, err := os.Lstat(f)
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
			desc += fmt.Sprintf(" %d:%d", st.Uid, st.Gid)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(f)
			desc += " -> " + target
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(f)
			desc += fmt.Sprintf(" %q %s", b, fi.ModTime().UTC().Format(time.RFC3339))
		}
		out[filepath.ToSlash(rel)] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffTrees(t *testing.T, got, want map[string]string) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			t.Errorf("%s: %q, want %q", k, got[k], want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %q should not be there", k, got[k])
		}
	}
}

// snapDevice is a root whose image ships K3s, with a K3s server's state and a server role.
func snapDevice(t *testing.T) device.Paths {
	t.Helper()
	p := device.Paths{Root: t.TempDir()}
	snapFile(t, p, device.K3sInfo, `{"version": "v1.31.4+k3s1"}`, 0o644, -1)
	snapFile(t, p, device.RoleFile, `{"role": {"kind": "server"}}`, 0o600, -1)
	data := device.K3sDataDir
	snapFile(t, p, data+"/server/db/state.db", "sqlite v1.31 schema", 0o600, -1)
	snapFile(t, p, data+"/server/db/state.db-wal", "wal frames", 0o600, -1)
	snapFile(t, p, data+"/server/tls/server-ca.crt", "CA", 0o644, -1)
	snapFile(t, p, data+"/server/tls/server-ca.key", "CA KEY", 0o600, -1)
	snapFile(t, p, data+"/server/tls/temporary-certs/apiserver-loopback.crt", "LOOP", 0o640, 1234)
	snapFile(t, p, data+"/server/token", "K10abc::server:xyz", 0o600, -1)
	if err := os.Symlink("/var/lib/rancher/k3s/server/token", p.Path(data+"/server/node-token")); err != nil {
		t.Fatal(err)
	}
	snapFile(t, p, data+"/agent/client-kubelet.crt", "KUBELET", 0o644, -1)
	snapFile(t, p, data+"/agent/kubelet.kubeconfig", "kubeconfig", 0o600, -1)
	snapFile(t, p, data+"/agent/containerd/io.containerd.content.v1.content/blob", "image layer", 0o644, -1)
	snapFile(t, p, data+"/server/manifests/app.yaml", "kind: Deployment", 0o644, -1)
	snapFile(t, p, device.K3sKubeconfig, "admin kubeconfig", 0o600, -1)
	snapFile(t, p, device.K3sNodeDir+"/password", "node password", 0o600, -1)
	if err := os.Chmod(p.Path(data+"/server/tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSnapshotRestore: a newer K3s changes its state after the snapshot; Restore brings back
// exactly what was snapshotted, again after an interrupted restore, and leaves the rest.
func TestSnapshotRestore(t *testing.T) {
	ctx := context.Background()
	p := snapDevice(t)
	r := &snapRunner{active: map[string]bool{k3s.ServerUnit: true}}
	before := dumpTree(t, p)

	if HasSnapshot(p) {
		t.Fatal("a snapshot before Snapshot")
	}
	if err := Snapshot(ctx, p, r); err != nil {
		t.Fatal(err)
	}
	if got, want := r.took(), []string{"systemctl is-active --quiet k3s.service", "systemctl is-active --quiet k3s-agent.service",
		"systemctl stop k3s.service k3s-agent.service", "systemctl start k3s.service"}; !slices.Equal(got, want) {
		t.Errorf("Snapshot ran %q, want %q", got, want)
	}
	if !HasSnapshot(p) {
		t.Fatal("no snapshot after Snapshot")
	}
	diffTrees(t, dumpTree(t, p), before) // the snapshot changes nothing
	idx, err := loadSnapshotIndex(p)
	if err != nil {
		t.Fatal(err)
	}
	wantPaths := []string{"var/lib/edgeimg/etc/rancher/node", "var/lib/rancher/k3s/agent/client-kubelet.crt", "var/lib/rancher/k3s/agent/kubelet.kubeconfig",
		"var/lib/rancher/k3s/k3s.yaml", "var/lib/rancher/k3s/server/db", "var/lib/rancher/k3s/server/node-token", "var/lib/rancher/k3s/server/tls", "var/lib/rancher/k3s/server/token"}
	if !slices.Equal(idx.Paths, wantPaths) || idx.K3sVersion != "v1.31.4+k3s1" {
		t.Errorf("snapshot index %+v\nwant paths %q", idx, wantPaths)
	}

	// The trial boot's newer K3s migrates: the datastore, new files, removed files.
	data := device.K3sDataDir
	snapFile(t, p, data+"/server/db/state.db", "sqlite v1.33 schema", 0o600, -1)
	snapFile(t, p, data+"/server/db/state.db-shm", "shm", 0o600, -1)
	os.Remove(p.Path(data + "/server/tls/server-ca.key"))
	snapFile(t, p, data+"/server/cred/passwd", "new creds", 0o600, -1)
	snapFile(t, p, data+"/agent/client-kubelet.crt", "KUBELET 2", 0o600, -1)
	snapFile(t, p, data+"/agent/new-in-1.33.crt", "NEW", 0o644, -1)
	snapFile(t, p, device.K3sNodeDir+"/password", "changed", 0o600, -1)
	snapFile(t, p, data+"/agent/containerd/io.containerd.content.v1.content/blob", "newer image layer", 0o644, -1)
	after := maps.Clone(before)
	after[data+"/agent/containerd/io.containerd.content.v1.content/blob"] = dumpTree(t, p)[data+"/agent/containerd/io.containerd.content.v1.content/blob"]

	if err := Restore(ctx, p, r); err != nil {
		t.Fatal(err)
	}
	if got, want := r.took(), []string{"systemctl stop k3s.service k3s-agent.service", "systemctl start k3s.service"}; !slices.Equal(got, want) {
		t.Errorf("Restore ran %q, want %q", got, want)
	}
	diffTrees(t, dumpTree(t, p), after)

	// A power cut in the middle of a restore: one path moved aside, its copy half made,
	// another one's leftovers. Restore again finishes it.
	if err := os.Rename(p.Path(data+"/server/db"), p.Path(data+"/server/db"+restoreOldSuffix)); err != nil {
		t.Fatal(err)
	}
	snapFile(t, p, data+"/server/db"+restoreNewSuffix+"/state.db", "half", 0o600, -1)
	snapFile(t, p, data+"/agent/kubelet.kubeconfig"+restoreNewSuffix, "half", 0o600, -1)
	if err := Restore(ctx, p, r); err != nil {
		t.Fatal(err)
	}
	diffTrees(t, dumpTree(t, p), after)
	if !HasSnapshot(p) {
		t.Error("Restore dropped the snapshot")
	}

	if err := DropSnapshot(p); err != nil {
		t.Fatal(err)
	}
	if HasSnapshot(p) {
		t.Error("a snapshot after DropSnapshot")
	}
	if err := DropSnapshot(p); err != nil {
		t.Errorf("dropping no snapshot: %v", err)
	}
	r.took()
	if err := Restore(ctx, p, r); !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("Restore without a snapshot: %v", err)
	}
	if calls := r.took(); len(calls) != 0 {
		t.Errorf("Restore without a snapshot ran %q", calls)
	}
}

// TestSnapshotEmpty: an image without K3s has nothing to snapshot; the empty snapshot makes
// Restore remove the K3s state made since, but never the node password.
func TestSnapshotEmpty(t *testing.T) {
	ctx := context.Background()
	p := device.Paths{Root: t.TempDir()}
	r := &snapRunner{}
	if err := Snapshot(ctx, p, r); err != nil {
		t.Fatal(err)
	}
	idx, err := loadSnapshotIndex(p)
	if err != nil || len(idx.Paths) != 0 || idx.K3sVersion != "" {
		t.Fatalf("index %+v, %v", idx, err)
	}
	before := dumpTree(t, p)
	snapFile(t, p, device.K3sDataDir+"/server/db/state.db", "made by the trial", 0o600, -1)
	snapFile(t, p, device.K3sDataDir+"/agent/client-kubelet.crt", "made by the trial", 0o600, -1)
	snapFile(t, p, device.K3sNodeDir+"/password", "registered by the trial", 0o600, -1)
	want := maps.Clone(before)
	for _, d := range []string{"var/lib/rancher", "var/lib/rancher/k3s", "var/lib/rancher/k3s/server", "var/lib/rancher/k3s/agent"} {
		want[d] = dumpTree(t, p)[d]
	}
	for _, d := range []string{"var/lib/edgeimg/etc", "var/lib/edgeimg/etc/rancher", device.K3sNodeDir, device.K3sNodeDir + "/password"} {
		want[d] = dumpTree(t, p)[d]
	}
	if err := Restore(ctx, p, r); err != nil {
		t.Fatal(err)
	}
	diffTrees(t, dumpTree(t, p), want)
	if len(r.calls) != 0 {
		t.Errorf("ran %q in an image without K3s", r.calls)
	}
}

// TestSnapshotFails: a snapshot that cannot be written is an error, K3s is started again,
// and an older snapshot or an interrupted one's leftovers do not count.
func TestSnapshotFails(t *testing.T) {
	ctx := context.Background()
	p := snapDevice(t)
	r := &snapRunner{active: map[string]bool{k3s.AgentUnit: true}}
	snapFile(t, p, "var/lib/edgeimg/ota", "not a directory", 0o644, -1)
	err := Snapshot(ctx, p, r)
	if err == nil || !strings.Contains(err.Error(), "snapshotting the K3s state") {
		t.Errorf("Snapshot: %v", err)
	}
	if calls := r.took(); len(calls) == 0 || calls[len(calls)-1] != "systemctl start k3s-agent.service" {
		t.Errorf("K3s not started again: %q", calls)
	}
	if HasSnapshot(p) {
		t.Error("a failed snapshot counts")
	}

	// What a power cut during Snapshot leaves is not a snapshot, and goes.
	os.Remove(p.Path("var/lib/edgeimg/ota"))
	leftover := p.Path("var/lib/edgeimg/ota/.k3s-snapshot.tmp123/files/var")
	if err := os.MkdirAll(leftover, 0o700); err != nil {
		t.Fatal(err)
	}
	if HasSnapshot(p) {
		t.Error("an interrupted snapshot counts")
	}
	if err := Snapshot(ctx, p, r); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("leftover of an interrupted snapshot: %v", err)
	}

	// A snapshot.json naming a path outside the K3s state is refused before anything is done.
	idx := p.Path(K3sSnapshotDir + "/snapshot.json")
	if err := os.WriteFile(idx, []byte(`{"format": 1, "paths": ["var/lib/rancher/k3s/agent/../../../../etc"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r.took()
	if err := Restore(ctx, p, r); err == nil || !strings.Contains(err.Error(), "not a path a K3s snapshot holds") {
		t.Errorf("Restore of a bad index: %v", err)
	}
	if calls := r.took(); len(calls) != 0 {
		t.Errorf("Restore of a bad index ran %q", calls)
	}
}

// TestSnapshotFreeSpace: a snapshot that would not fit is refused before it is copied.
func TestSnapshotFreeSpace(t *testing.T) {
	dir := t.TempDir()
	if err := checkFreeSpace(filepath.Join(dir, "not/yet/made"), 1<<20); err != nil {
		t.Errorf("1 MiB: %v", err)
	}
	err := checkFreeSpace(dir, 1<<60)
	if err == nil || !strings.Contains(err.Error(), "not enough free space on the filesystem of "+dir+" for the K3s state: it needs 1099511627776 MiB") {
		t.Errorf("1 EiB: %v", err)
	}
}
