package ota

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/hw/rpi4"
	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/otatest"
)

// mountRecorder stands for mount and umount: the "config partition" is a directory that is
// only reachable at the mount point while mounted.
type mountRecorder struct {
	mu      sync.Mutex
	calls   []string
	backing string // the partition's files
}

func (m *mountRecorder) Run(_ context.Context, name string, args ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, name+" "+strings.Join(args, " "))
	switch name {
	case "mount":
		dir := args[len(args)-1]
		os.Remove(dir)
		return os.Symlink(m.backing, dir)
	case "umount":
		return os.Remove(args[0])
	}
	return nil
}

func TestDeviceConfig(t *testing.T) {
	root := t.TempDir()
	p := device.Paths{Root: root}
	r := &mountRecorder{backing: filepath.Join(root, "config-partition")}
	if _, err := DeviceConfig(p, r); err == nil {
		t.Fatal("no release.json: no error")
	}
	write := func(rel, data string) {
		must(t, os.MkdirAll(filepath.Dir(p.Path(rel)), 0o755))
		must(t, os.WriteFile(p.Path(rel), []byte(data), 0o644))
	}
	write(ReleaseFile, `{"name":"demo","board":"rpi4","version":"1","layoutVersion":1,"dataPartUUID":"5EED1E55-07"}`)
	if _, err := DeviceConfig(p, r); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no trusted keys: %v", err)
	}
	_, pk := otatest.Key(t, 1)
	write(filepath.Join(TrustedDir, bundle.KeyID(pk)+".pub"), string(bundle.PublicKeyPEM(pk)))
	write("config-partition/autoboot.txt", string(rpi4.Autoboot(2, 3)))
	write("proc/device-tree/chosen/bootloader/partition", "\x00\x00\x00\x03")
	write("proc/device-tree/chosen/bootloader/tryboot", "\x00\x00\x00\x01")

	cfg, err := DeviceConfig(p, r)
	must(t, err)
	if cfg.Installed.Version != "1" || cfg.Installed.Board != "rpi4" || len(cfg.Keys) != 1 {
		t.Fatalf("config %+v", cfg)
	}
	// On slot B's trial: commit it. autoboot.txt is rewritten on the mounted partition,
	// which is unmounted afterwards.
	a, err := cfg.Switch.Active()
	must(t, err)
	if a.Name != "b" {
		t.Fatalf("active slot %v", a)
	}
	must(t, cfg.Switch.Commit(a))
	b, err := os.ReadFile(filepath.Join(r.backing, "autoboot.txt"))
	must(t, err)
	if def, try, ok := rpi4.ParseAutoboot(b); !ok || def != 3 || try != 2 {
		t.Fatalf("autoboot.txt after the commit: %q", b)
	}
	dir := p.Path("run/edgeimg/autoboot")
	dev := p.Path("dev/disk/by-partuuid/5eed1e55-01")
	want := []string{"mount -t vfat -o rw,nosuid,nodev,noexec,sync " + dev + " " + dir, "umount " + dir}
	if got := r.calls; !slices.Equal(got, want) {
		t.Fatalf("commands %q", got)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("the config partition is still mounted")
	}
}
