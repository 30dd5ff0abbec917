package grow

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/internal/testutil"
)

// fakeRoot lays out a directory like /dev and /sys of a Raspberry Pi whose card is the image
// file: dev/mmcblk0 is the image, udev's link names mmcblk0p7, and sysfs knows the partition.
func fakeRoot(t *testing.T, image string) string {
	t.Helper()
	root := t.TempDir()
	disk := "sys/devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0"
	files := map[string]string{
		disk + "/size":                "2097152\n",
		disk + "/mmcblk0p7/partition": "7\n",
		disk + "/mmcblk0p7/start":     "139264\n",
		disk + "/mmcblk0p7/size":      "131072\n",
		disk + "/mmcblk0p6/partition": "6\n",
		"dev/mmcblk0p7":               "",
		"dev/mmcblk0p6":               "",
		disk + "/mmcblk0p1/partition": "1\n",
		"dev/mmcblk0p1":               "",
	}
	for name, content := range files {
		mustWrite(t, filepath.Join(root, name), content)
	}
	links := map[string]string{
		"dev/disk/by-partuuid/5eed1e55-07": "../../mmcblk0p7",
		"dev/disk/by-partuuid/5eed1e55-06": "../../mmcblk0p6",
		"dev/disk/by-partuuid/5eed1e55-01": "../../mmcblk0p1",
		"dev/disk/by-partuuid/5eed1e56-07": "../../mmcblk0p7",
		"sys/class/block/mmcblk0":          "../../" + disk[len("sys/"):],
		"sys/class/block/mmcblk0p7":        "../../" + disk[len("sys/"):] + "/mmcblk0p7",
		"sys/class/block/mmcblk0p6":        "../../" + disk[len("sys/"):] + "/mmcblk0p6",
		"sys/class/block/mmcblk0p1":        "../../" + disk[len("sys/"):] + "/mmcblk0p1",
	}
	for name, target := range links {
		mustSymlink(t, target, filepath.Join(root, name))
	}
	if err := os.Rename(image, filepath.Join(root, "dev/mmcblk0")); err != nil {
		t.Fatal(err)
	}
	return root
}

func mustWrite(t *testing.T, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustSymlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

func TestRunOnImageFile(t *testing.T) {
	root := fakeRoot(t, makeImage(t, 1<<30, false))
	disk := filepath.Join(root, "dev/mmcblk0")
	before := sfdiskTable(t, disk)
	ctx := context.Background()

	res, err := Run(ctx, Options{PARTUUID: "5EED1E55-07", Root: root})
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Disk: disk, Partition: 7, DiskSize: 1 << 30, OldSize: 64 * mib, NewSize: 1<<30 - 139264*SectorSize, Grown: true}
	if res != want {
		t.Errorf("first run: %+v\nwant %+v", res, want)
	}
	checkGrown(t, disk, before, 1<<30)

	res, err = Run(ctx, Options{PARTUUID: testPARTUUID, Root: root})
	want.OldSize, want.Grown = want.NewSize, false
	if err != nil || res != want {
		t.Errorf("second run: %+v, %v\nwant %+v", res, err, want)
	}
}

func TestRunRefuses(t *testing.T) {
	ctx := context.Background()
	root := fakeRoot(t, makeImage(t, 1<<30, false))
	for id, want := range map[string]string{
		"5eed1e55":    "not of the MBR form",
		"5eed1e55-00": "not of the MBR form",
		"zzzzzzzz-07": "not of the MBR form",
		// no partition 8 on the disk, and no disk at all for 5eed1e57
		"5eed1e55-08": "the partition table has no partition 8",
		"5eed1e57-07": "finding the device of PARTUUID 5eed1e57-07",
		// udev's link and sysfs agree, but partition 6 is not the last one.
		"5eed1e55-06": "does not end before data partition 6",
		"5eed1e56-07": "has disk signature 5eed1e55, not the 5eed1e56 of PARTUUID 5eed1e56-07",
	} {
		_, err := Run(ctx, Options{PARTUUID: id, Root: root})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("PARTUUID %s: %v; want an error saying %q", id, err, want)
		}
	}
	// udev's link names a partition sysfs numbers differently.
	mustWrite(t, filepath.Join(root, "sys/class/block/mmcblk0p6/partition"), "7\n")
	if _, err := Run(ctx, Options{PARTUUID: "5eed1e55-06", Root: root}); err == nil || !strings.Contains(err.Error(), "mmcblk0p6 is partition 7 but PARTUUID 5eed1e55-06 names partition 6") {
		t.Errorf("mismatched partition number: %v", err)
	}
	// The kernel's idea of the partition's start differs from the table's.
	mustWrite(t, filepath.Join(root, "sys/class/block/mmcblk0p7/start"), "139265\n")
	if _, err := Run(ctx, Options{PARTUUID: testPARTUUID, Root: root}); err == nil || !strings.Contains(err.Error(), "at sector 139265 but the table at sector 139264") {
		t.Errorf("mismatched start: %v", err)
	}
	// The table fits the card but the kernel has no partition 7.
	if err := os.Remove(filepath.Join(root, "dev/disk/by-partuuid", testPARTUUID)); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, Options{PARTUUID: testPARTUUID, Root: root}); err == nil || !strings.Contains(err.Error(), "the kernel has no partition 7 on") {
		t.Errorf("no partition 7 in the kernel: %v", err)
	}
}

func TestRunCardTooSmall(t *testing.T) {
	root := fakeRoot(t, makeImage(t, 100*mib, false))
	const msg = "write the image to a card of at least 138412032 bytes (132.0 MiB)"
	_, err := Run(context.Background(), Options{PARTUUID: testPARTUUID, Root: root})
	if !errors.Is(err, ErrCardTooSmall) || !strings.Contains(err.Error(), msg) {
		t.Fatalf("run on a short card: %v", err)
	}
	// On a card that ends before the data partition, the kernel has no partition 7: Run finds
	// the card through partition 1 and says the same.
	if err := os.Remove(filepath.Join(root, "dev/disk/by-partuuid", testPARTUUID)); err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), Options{PARTUUID: testPARTUUID, Root: root})
	if !errors.Is(err, ErrCardTooSmall) || !strings.Contains(err.Error(), msg) {
		t.Fatalf("run on a short card without partition 7: %v", err)
	}
}

// TestRunOnLoopDevice grows the partition of a real block device, a loop device over the
// image, and checks that the kernel sees the new size. It needs root and loop devices.
func TestRunOnLoopDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	losetup, partx := testutil.NeedTool(t, "losetup"), testutil.NeedTool(t, "partx")
	image := makeImage(t, 1<<30, false)
	out, err := exec.Command(losetup, "--show", "--find", "--partscan", image).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device here: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", loop, err, out)
		}
	})
	name := filepath.Base(loop)
	sysP7 := filepath.Join("/sys/class/block", name+"p7")
	if _, err := os.Stat(sysP7); err != nil {
		// Some kernels (here, a microVM) do not scan loop devices: add the partitions from
		// user space.
		testutil.Run(t, partx, "--add", loop)
	}
	root := t.TempDir()
	mustSymlink(t, "../../"+name+"p7", filepath.Join(root, "dev/disk/by-partuuid", testPARTUUID))
	mustSymlink(t, loop, filepath.Join(root, "dev", name))
	mustSymlink(t, "/sys", filepath.Join(root, "sys"))
	kernelSize := func() int64 {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(sysP7, "size"))
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n * SectorSize
	}
	if got := kernelSize(); got != 64*mib {
		t.Fatalf("the kernel has partition 7 at %d bytes before growing", got)
	}
	before := sfdiskTable(t, image)

	ctx := context.Background()
	res, err := Run(ctx, Options{PARTUUID: testPARTUUID, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	newSize := int64(1<<30 - 139264*SectorSize)
	if !res.Grown || res.NewSize != newSize || res.DiskSize != 1<<30 {
		t.Errorf("run: %+v", res)
	}
	if got := kernelSize(); got != newSize {
		t.Errorf("the kernel has partition 7 at %d bytes, want %d", got, newSize)
	}
	checkGrown(t, image, before, 1<<30)

	// A run whose ioctl did not happen: the table is grown but the kernel has the old size.
	dev, err := os.Open(loop)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if err := resizePartition(dev, 7, 139264*SectorSize, 64*mib); err != nil {
		t.Fatal(err)
	}
	res, err = Run(ctx, Options{PARTUUID: testPARTUUID, Root: root})
	if err != nil || !res.Grown || kernelSize() != newSize {
		t.Errorf("run after the kernel lost the size: %+v, %v, kernel %d", res, err, kernelSize())
	}
	res, err = Run(ctx, Options{PARTUUID: testPARTUUID, Root: root})
	if err != nil || res.Grown {
		t.Errorf("third run: %+v, %v; want nothing done", res, err)
	}
}
