package rpi4

import (
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/hw"
)

func TestCmdLine(t *testing.T) {
	base := "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot cgroup_enable=cpuset rw"
	got := CmdLine(base, "deadbeef-05", []string{"extra=1"})
	want := "console=serial0,115200 console=tty1 quiet cgroup_enable=cpuset root=PARTUUID=deadbeef-05 rootfstype=ext4 ro rootwait cgroup_memory=1 cgroup_enable=memory panic=10 extra=1"
	if got != want {
		t.Fatalf("CmdLine:\n got %s\nwant %s", got, want)
	}
	for _, bad := range []string{"init=", "fsck.repair", "systemd.run", " rw", "1234abcd"} {
		if strings.Contains(got, bad) {
			t.Errorf("cmdline keeps %q", bad)
		}
	}
	// Idempotent: rewriting our own output changes nothing.
	if again := CmdLine(got, "deadbeef-05", []string{"extra=1"}); again != got {
		t.Errorf("not idempotent:\n%s\n%s", got, again)
	}
}

func TestAutoboot(t *testing.T) {
	b := Autoboot(2, 3)
	if len(b) != AutobootSize {
		t.Fatalf("autoboot.txt is %d bytes, want %d", len(b), AutobootSize)
	}
	if !strings.HasPrefix(string(b), "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n") {
		t.Fatalf("autoboot.txt:\n%s", b)
	}
	if len(Autoboot(3, 2)) != AutobootSize {
		t.Fatal("swapped autoboot.txt changes size")
	}
}

func TestConfigTxt(t *testing.T) {
	got := string(ConfigTxt([]byte("dtparam=audio=on\ndtparam=watchdog=off\n[cm4]\notg_mode=1\n")))
	if strings.Contains(got, "watchdog=off") {
		t.Error("kept the base's watchdog setting")
	}
	if !strings.HasSuffix(got, "[all]\n# edgeimg: 64-bit kernel and the hardware watchdog\narm_64bit=1\ndtparam=watchdog=on\n") {
		t.Errorf("config.txt does not end in an [all] section with the watchdog:\n%s", got)
	}
	if again := string(ConfigTxt([]byte(got))); again != got {
		t.Errorf("not idempotent:\n%s\n---\n%s", got, again)
	}
}

func TestLayout(t *testing.T) {
	b := &Board{}
	parts, err := b.Layout(b.DefaultSizes())
	if err != nil {
		t.Fatal(err)
	}
	var nums []int
	for _, p := range parts {
		nums = append(nums, p.Number)
	}
	if len(parts) != 6 || parts[0].Role != hw.RoleConfig || parts[5].Role != hw.RoleData {
		t.Fatalf("layout %v", parts)
	}
	sa, _ := hw.ByRole(parts, hw.RoleSystemA)
	sb, _ := hw.ByRole(parts, hw.RoleSystemB)
	if sa.Label != sb.Label || sa.Size != sb.Size {
		t.Error("system slots differ in label or size: one filesystem must fit either slot")
	}
	if _, err := b.Layout(hw.Sizes{Boot: 100*MiB + 1, System: GiB, DataMin: GiB}); err == nil || !strings.Contains(err.Error(), "layout.bootSize") {
		t.Errorf("unaligned size: %v", err)
	}
}

func TestBootFiles(t *testing.T) {
	epoch := time.Unix(1700000000, 0).UTC()
	base := tree.New()
	for name, body := range map[string]string{
		"start4.elf": "fw", "fixup4.dat": "fx", "kernel8.img": "k", "config.txt": "arm_64bit=1\n",
		"cmdline.txt": "console=tty1 root=PARTUUID=aa-02 init=/x\n", "firstrun.sh": "x", "userconf.txt": "pi:hash",
		"overlays/vc4-kms-v3d.dtbo": "o",
	} {
		if err := base.WriteFile(name, []byte(body), 0o644, time.Unix(1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	b := &Board{}
	out, err := b.BootFiles(hw.BootInput{Base: base, Slot: b.Slots()[0], RootUUID: "0badcafe-05", Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"firstrun.sh", "userconf.txt"} {
		if out.Get(gone) != nil {
			t.Errorf("%s kept", gone)
		}
	}
	cmd, _ := out.ReadFile("cmdline.txt")
	if !strings.Contains(string(cmd), "root=PARTUUID=0badcafe-05 ") || strings.Count(string(cmd), "\n") != 1 {
		t.Errorf("cmdline.txt = %q", cmd)
	}
	if e := out.Get("overlays/vc4-kms-v3d.dtbo"); e == nil || !e.ModTime.Equal(epoch) {
		t.Errorf("overlay dtbo missing or mtime not the epoch: %+v", e)
	}
	base.Remove("start4.elf")
	if _, err := b.BootFiles(hw.BootInput{Base: base, Slot: b.Slots()[0], RootUUID: "x", Epoch: epoch}); err == nil || !strings.Contains(err.Error(), "start4.elf") {
		t.Errorf("missing firmware: %v", err)
	}
}
