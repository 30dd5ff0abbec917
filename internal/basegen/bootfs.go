package basegen

import (
	"fmt"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// configTxt is the config.txt of Raspberry Pi OS bookworm.
const configTxt = `# For more options and information see
# http://rptl.io/configtxt
# Some settings may impact device functionality. See link above for details

# Uncomment some or all of these to enable the optional hardware interfaces
#dtparam=i2c_arm=on
#dtparam=i2s=on
#dtparam=spi=on

# Enable audio (loads snd_bcm2835)
dtparam=audio=on

# Additional overlays and parameters are documented
# /boot/firmware/overlays/README

# Automatically load overlays for detected cameras
camera_auto_detect=1

# Automatically load overlays for detected DSI displays
display_auto_detect=1

# Automatically load initramfs files, if found
auto_initramfs=1

# Enable DRM VC4 V3D driver
dtoverlay=vc4-kms-v3d
max_framebuffers=2

# Don't have the firmware create an initial video= setting in cmdline.txt.
# Use the kernel's default instead.
disable_fw_kms_setup=1

# Run in 64-bit mode
arm_64bit=1

# Disable compensation for displays with overscan
disable_overscan=1

# Run as fast as firmware / board allows
arm_boost=1

[cm4]
# Enable host mode on the 2711 built-in XHCI USB controller.
# This line should be removed if the legacy DWC2 controller is required
# (e.g. for USB device mode) or if USB support is not required.
otg_mode=1

[cm5]
dtoverlay=dwc2,dr_mode=host

[all]
`

var overlays = []string{
	"ads7846", "disable-bt", "disable-wifi", "dwc2", "gpio-fan", "gpio-ir", "gpio-shutdown",
	"hifiberry-dac", "i2c-gpio", "i2c-rtc", "miniuart-bt", "pwm", "pwm-2chan", "rpi-poe",
	"rpi-poe-plus", "spi0-1cs", "uart2", "uart3", "vc4-fkms-v3d", "vc4-kms-v3d", "vc4-kms-v3d-pi4",
	"w1-gpio",
}

// BootTree returns the files Generate puts on the FAT32 boot partition (mounted at
// /boot/firmware): config.txt, cmdline.txt naming the root by PARTUUID, issue.txt, and
// placeholders of pseudo-random bytes for the firmware, kernel, initramfs, device trees and
// overlays, of roughly their real sizes unless o.Small. Every entry is root:root, files 0755
// and directories 0755 (what the vfat mount shows).
func BootTree(o Options) (*tree.Tree, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	return bootTree(o, deriveIDs(o.Seed), newGenerator(o.Seed))
}

func bootTree(o Options, id ids, gen *generator) (*tree.Tree, error) {
	b := &builder{t: tree.New(), mt: o.Epoch, gen: gen}
	big := func(real, small int64) int64 {
		if o.Small {
			return small
		}
		return real
	}
	b.file("config.txt", 0o755, configTxt)
	b.file("cmdline.txt", 0o755, fmt.Sprintf("console=serial0,115200 console=tty1 root=PARTUUID=%08x-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n", id.diskID))
	b.file("issue.txt", 0o755, "Raspberry Pi reference 2024-11-19\nGenerated using pi-gen, https://github.com/RPi-Distro/pi-gen, 891df1e21ed2b6099a2e6a13e26c91dea44b34d4, stage2\n")
	b.file("LICENCE.broadcom", 0o755, "Copyright (c) 2006, Broadcom Corporation.\nCopyright (c) 2015, Raspberry Pi (Trading) Ltd\nAll rights reserved.\n")
	b.blob("bootcode.bin", 0o755, big(52476, 8<<10))
	b.blob("start4.elf", 0o755, big(2250912, 96<<10))
	b.blob("start4x.elf", 0o755, big(3007944, 96<<10))
	b.blob("fixup4.dat", 0o755, 5456)
	b.blob("fixup4x.dat", 0o755, 8440)
	b.blob("kernel8.img", 0o755, big(9361920, 256<<10))
	b.blob("initramfs8", 0o755, big(11534336, 192<<10))
	for _, dtb := range []string{"bcm2711-rpi-4-b", "bcm2711-rpi-400", "bcm2711-rpi-cm4", "bcm2711-rpi-cm4s"} {
		b.blob(dtb+".dtb", 0o755, big(56093, 12<<10))
	}
	b.file("overlays/README", 0o755, "Introduction\n============\n\nThis directory contains Device Tree overlays. Device Tree makes it possible\nto support many hardware configurations with a single kernel and without the\nneed to explicitly load or blacklist kernel modules.\n")
	b.blob("overlays/overlay_map.dtb", 0o755, 5439)
	for i, ov := range overlays {
		b.blob("overlays/"+ov+".dtbo", 0o755, int64(1200+i*173))
	}
	if b.err != nil {
		return nil, b.err
	}
	return b.t, nil
}
