package device

import (
	"fmt"
	"os"
	"path/filepath"
)

// Paths of the device's files, relative to Paths.Root. The data partition is mounted at /var;
// /etc/rancher/k3s/config.yaml.d, /etc/rancher/node and /etc/NetworkManager/system-connections
// are symlinks (in the read-only slot) into /var/lib/edgeimg/etc.
const (
	DeviceTreeSerial = "proc/device-tree/serial-number"
	MemInfo          = "proc/meminfo"
	Uptime           = "proc/uptime"
	StateDir         = "var/lib/edgeimg"
	DeviceIDFile     = "var/lib/edgeimg/device-id"
	SettingsFile     = "var/lib/edgeimg/device.json"
	IdentityDir      = "var/lib/edgeimg/identity"
	EnrollmentFile   = "var/lib/edgeimg/enrollment.json"
	RoleFile         = "var/lib/edgeimg/role.json"
	NMConnections    = "var/lib/edgeimg/etc/NetworkManager/system-connections"
	K3sConfigDir     = "var/lib/edgeimg/etc/rancher/k3s/config.yaml.d"
	K3sRoleConfig    = "var/lib/edgeimg/etc/rancher/k3s/config.yaml.d/50-edgeimg-role.yaml"
	K3sNodeDir       = "var/lib/edgeimg/etc/rancher/node"
	K3sDataDir       = "var/lib/rancher/k3s"
	K3sKubeconfig    = "var/lib/rancher/k3s/k3s.yaml"
	FleetCA          = "usr/lib/edgeimg/fleet-ca.pem"
	FleetConfig      = "usr/lib/edgeimg/fleet.json"
	// K3sInfo is written by the builder when the image ships K3s (version, default role).
	K3sInfo = "usr/lib/edgeimg/k3s.json"
	// K3sImageConfig is the image's base K3s config (the spec's k3s.config merged in); an
	// image whose default role is agent has the server to join and its token there.
	K3sImageConfig = "etc/rancher/k3s/config.yaml"
	ClockEpoch     = "usr/lib/clock-epoch"
	// SettingsOnConfig is device.yaml's path on the config (first FAT) partition.
	SettingsOnConfig = "edgeimg/device.yaml"
)

// Paths resolves the device's files under Root ("" or "/" for the real system; tests use a
// temporary directory).
type Paths struct {
	Root string
}

// Path returns rel under the root.
func (p Paths) Path(rel string) string {
	if p.Root == "" {
		return "/" + rel
	}
	return filepath.Join(p.Root, rel)
}

// WriteFileAtomic replaces path with data so that a power cut leaves the old or the new file,
// never a mix: it writes a temporary file in the same directory, fsyncs it, renames it over
// path and fsyncs the directory. Missing parent directories are made (0755).
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming onto %s: %w", path, err)
	}
	ok = true
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, making renames and removals in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
