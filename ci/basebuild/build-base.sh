#!/usr/bin/env bash
# build-base.sh OUT.img — builds a realistic Raspberry Pi 4 base image from Debian bookworm
# arm64 packages, laid out the way Raspberry Pi OS lays out its image:
#
#   MBR, p1 FAT32 "bootfs" at 4 MiB (firmware, kernel8.img, initramfs8, DTBs, overlays/,
#   config.txt, cmdline.txt with root=PARTUUID=SIG-02), p2 ext4 "rootfs" (/boot/firmware is an
#   empty mount point in it, as in Raspberry Pi OS).
#
# It is the base of the end-to-end test (ci/e2e, `make e2e`). It runs as root (mmdebstrap
# --mode=root, mke2fs -d with the tree's owners) on an x86-64 host through qemu-user-static
# and binfmt_misc, which it mounts and enables itself (CI machines are containers without
# systemd). The image is cached in $EDGEIMG_E2E_CACHE (default /var/cache/edgeimg-e2e), keyed
# by this script (its package list and layout) and the digests of the archive's arm64 package
# indices, which change whenever a package version does. Offline, the newest cached image is
# used. Host packages: mmdebstrap qemu-user-static binfmt-support dosfstools mtools
# e2fsprogs fdisk curl.
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 OUT.img" >&2
	exit 2
fi
out=$1
cache=${EDGEIMG_E2E_CACHE:-/var/cache/edgeimg-e2e}
mirror=${EDGEIMG_E2E_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
components=main,non-free-firmware
# What a Raspberry Pi OS Lite has that matters to edgeimg: systemd and udev, NetworkManager,
# OpenSSH, sudo, e2fsprogs (x-systemd.makefs), the kernel with its initramfs and the Pi's
# GPU firmware.
packages=(
	systemd systemd-sysv udev dbus kmod
	e2fsprogs fdisk iproute2 network-manager openssh-server sudo ca-certificates
	initramfs-tools linux-image-arm64 raspi-firmware
)
boot_mib=256 # Raspberry Pi OS uses 512 MiB; a Debian kernel, initramfs and firmware need ~90

start=$(date +%s)
log() { echo "[build-base $(( $(date +%s) - start ))s] $*" >&2; }

# --- binfmt_misc: run arm64 maintainer scripts through qemu-user-static ---------------------
binfmt() {
	if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
		mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
	fi
	if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
		if command -v update-binfmts >/dev/null; then
			update-binfmts --enable qemu-aarch64 || true
		fi
	fi
	if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
		# The register line qemu-user-static ships, with the F flag: the interpreter is opened
		# now, so it works inside the chroot.
		local interp=/usr/libexec/qemu-binfmt/aarch64-binfmt-P
		[ -x "$interp" ] || interp=/usr/bin/qemu-aarch64-static
		printf ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:%s:PF\n' "$interp" \
			>/proc/sys/fs/binfmt_misc/register
	fi
	grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64
}

# --- cache key ---------------------------------------------------------------------------------
# The InRelease file lists the sha256 of each component's arm64 package index: any new
# package version changes it. Only those lines enter the key (not the file's date).
index_digests() {
	local rel
	rel=$(curl -fsSL --retry 3 --max-time 60 "$mirror/dists/$suite/InRelease") || return 1
	printf '%s\n' "$rel" | awk '/^SHA256:/{s=1;next} /^[A-Za-z]/{s=0} s' |
		grep -E ' (main|non-free-firmware)/binary-arm64/Packages(\.xz)?$' | sort
}

mkdir -p "$cache"
self=$(sha256sum "$0" | cut -c1-64)
if digests=$(index_digests) && [ -n "$digests" ]; then
	key=$(printf '%s\n%s\n%s\n%s\n' "$self" "$suite" "${packages[*]}" "$digests" | sha256sum | cut -c1-16)
	cached=$cache/base-$key.img
else
	# Offline: the newest cached image, if any.
	cached=$(ls -t "$cache"/base-*.img 2>/dev/null | head -n1 || true)
	if [ -z "$cached" ]; then
		echo "build-base: cannot reach $mirror and no cached base in $cache" >&2
		exit 1
	fi
	log "mirror unreachable: using the newest cached base $cached"
	key=
fi

if [ -s "$cached" ]; then
	log "cached: $cached"
	cp --sparse=always "$cached" "$out.tmp"
	mv "$out.tmp" "$out"
	log "done (cached) -> $out"
	exit 0
fi

log "building base $key (uncached): ${packages[*]}"
binfmt
log "binfmt_misc: qemu-aarch64 enabled"

work=$(mktemp -d "$cache/work.XXXXXX")
chmod 0755 "$work" # apt downloads as _apt below it
cleanup() {
	rc=$?
	# mmdebstrap unmounts what it mounted; the firmware tmpfs is ours.
	umount "$work/root/boot/firmware" 2>/dev/null || true
	if [ $rc -ne 0 ] && [ -n "${EDGEIMG_E2E_KEEP_WORK:-}" ]; then
		echo "build-base: failed; kept $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
root=$work/root
fw=$work/firmware
hooks=$work/hooks
mkdir -p "$fw" "$hooks" "$work/initramfs/conf.d" "$work/initramfs/hooks"
sig=${key:0:8}

# --- root filesystem ---------------------------------------------------------------------------
# The initramfs holds the modules that mount the root on a Pi 4 (SD card, USB) and on QEMU's
# virt machine (virtio), rather than Debian's default MODULES=most: that one runs modprobe for
# a thousand modules, each through qemu-user, and takes more than 5 minutes to make. The
# settings go in before initramfs-tools is installed (conf.d/ and hooks/ are not conffiles).
cat >"$work/initramfs/conf.d/edgeimg-e2e.conf" <<'EOF'
# edgeimg e2e base (ci/basebuild): only the modules of hooks/edgeimg-e2e-modules.
MODULES=list
EOF
cat >"$work/initramfs/hooks/edgeimg-e2e-modules" <<'EOF'
#!/bin/sh
# edgeimg e2e base (ci/basebuild): what mounts the root on a Pi 4 (SD card, USB) and on
# QEMU's virt machine (virtio).
PREREQ=""
prereqs() { echo "$PREREQ"; }
case $1 in
prereqs) prereqs; exit 0 ;;
esac
. /usr/share/initramfs-tools/hook-functions
for m in ext4 virtio_pci virtio_blk virtio_net sdhci-iproc mmc_block reset-raspberrypi \
	xhci_pci usb_storage uas sd_mod; do
	manual_add_modules "$m"
done
EOF
chmod 0755 "$work/initramfs/hooks/edgeimg-e2e-modules"

# mmdebstrap hooks ($1 is the chroot). raspi-firmware's kernel and initramfs hooks copy the
# kernel, initrd and DTBs to /boot/firmware and refuse to run unless it is a mount point:
# it gets a tmpfs, whose content is kept at the end.
cat >"$hooks/setup" <<'EOF'
#!/bin/sh
set -e
work=$(dirname "$(dirname "$0")")
mkdir -p "$1/etc" "$1/boot/firmware"
cp -a "$work/initramfs" "$1/etc/initramfs-tools"
mount -t tmpfs -o mode=0755 tmpfs "$1/boot/firmware"
EOF
# The initramfs is made once, at the end: the kernel's postinst and the initramfs-tools
# trigger would each make it (a minute each under emulation). update-initramfs is diverted
# to a no-op until then.
cat >"$hooks/essential" <<'EOF'
#!/bin/sh
set -e
chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
printf '#!/bin/sh\necho "update-initramfs: deferred to the end by build-base.sh" >&2\n' >"$1/usr/sbin/update-initramfs"
chmod 0755 "$1/usr/sbin/update-initramfs"
EOF
cat >"$hooks/customize" <<'EOF'
#!/bin/sh
set -e
work=$(dirname "$(dirname "$0")")
rm "$1/usr/sbin/update-initramfs"
chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
kver=$(ls "$1/usr/lib/modules" | sort -V | tail -n1)
chroot "$1" update-initramfs -c -k "$kver"
# The emulated boot needs virtio (block, PCI, net), built in or in the initramfs.
chroot "$1" lsinitramfs "/boot/initrd.img-$kver" >"$work/initramfs.list"
for m in virtio_blk virtio_pci virtio_net; do
	c=CONFIG_$(echo "$m" | tr a-z A-Z)
	grep -qx "$c=y" "$1/boot/config-$kver" || grep -q "/$m\.ko" "$work/initramfs.list" || {
		echo "build-base: $m is neither built into $kver nor in its initramfs" >&2
		exit 1
	}
done
cp -a "$1/boot/firmware/." "$work/firmware/"
umount "$1/boot/firmware"
chroot "$1" dpkg-query -W -f='${Package} ${Version}\n' >"$work/manifest"
EOF
chmod 0755 "$hooks"/*

mmdebstrap --mode=root --arch=arm64 --variant=minbase --components="$components" \
	--aptopt='APT::Install-Recommends "false"' \
	--dpkgopt='force-unsafe-io' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--include="$(IFS=,; echo "${packages[*]}")" \
	--setup-hook="$hooks/setup" --essential-hook="$hooks/essential" --customize-hook="$hooks/customize" \
	"$suite" "$root" "$mirror" 2>&1 | while IFS= read -r l; do log "$l"; done
log "mmdebstrap done: $(wc -l <"$work/manifest") packages, $(du -sh "$root" | cut -f1)," \
	"initramfs with $(grep -c '\.ko$' "$work/initramfs.list") modules"

kver=$(basename "$(ls -d "$root"/usr/lib/modules/* | sort -V | tail -n1)")
vmlinuz=$root/boot/vmlinuz-$kver
initrd=$root/boot/initrd.img-$kver
[ -s "$vmlinuz" ] && [ -s "$initrd" ] || { echo "build-base: no kernel or initrd for $kver" >&2; exit 1; }

# --- Raspberry Pi OS conventions in the root -------------------------------------------------
echo raspberrypi >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n\n127.0.1.1\traspberrypi\n' >"$root/etc/hosts"
cat >"$root/etc/fstab" <<EOF
proc            /proc           proc    defaults          0       0
PARTUUID=$sig-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=$sig-02  /               ext4    defaults,noatime  0       1
EOF
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
find "$root/boot/firmware" -mindepth 1 -delete

# --- boot partition ----------------------------------------------------------------------------
boot=$work/boot
mkdir -p "$boot/overlays"
cp -a "$fw/." "$boot/"
# Debian's hook names the kernel and initrd by version; Raspberry Pi OS uses kernel8.img and
# the initramfs8 that auto_initramfs=1 loads beside it.
rm -f "$boot"/vmlinuz-* "$boot"/initrd.img-* "$boot/config.txt" "$boot/cmdline.txt"
cp "$vmlinuz" "$boot/kernel8.img"
cp "$initrd" "$boot/initramfs8"
for f in start4.elf fixup4.dat bcm2711-rpi-4-b.dtb; do
	[ -s "$boot/$f" ] || { echo "build-base: raspi-firmware left no $f" >&2; ls "$boot" >&2; exit 1; }
done
cat >"$boot/config.txt" <<'EOF'
# For more options and information see
# http://rptl.io/configtxt
# Some settings may impact device functionality. See link above for details

# Enable audio (loads snd_bcm2835)
dtparam=audio=on

# Automatically load initramfs files, if found
auto_initramfs=1

# Run in 64-bit mode
arm_64bit=1

# Disable compensation for displays with overscan
disable_overscan=1

# Run as fast as firmware / board allows
arm_boost=1

[cm4]
# Enable host mode on the 2711 built-in XHCI USB controller.
otg_mode=1

[all]
enable_uart=1
EOF
echo "console=serial0,115200 console=tty1 root=PARTUUID=$sig-02 rootfstype=ext4 fsck.repair=yes rootwait" >"$boot/cmdline.txt"

# --- the disk ----------------------------------------------------------------------------------
root_bytes=$(du -sb "$root" | cut -f1)
root_mib=$(( (root_bytes * 5 / 4 / 1048576 + 256 + 3) / 4 * 4 ))
img=$work/base.img
truncate -s $(( (4 + boot_mib + root_mib) * 1048576 )) "$img"
sfdisk --quiet "$img" <<EOF
label: dos
label-id: 0x$sig
unit: sectors
start=8192, size=$(( boot_mib * 2048 )), type=c
start=$(( (4 + boot_mib) * 2048 )), size=$(( root_mib * 2048 )), type=83
EOF

mkfs.vfat -F 32 -n bootfs -i "${key:8:8}" -C "$work/boot.fat" $(( boot_mib * 1024 )) >/dev/null
mcopy -s -p -m -i "$work/boot.fat" "$boot"/* ::/
dd if="$work/boot.fat" of="$img" bs=1M seek=4 conv=notrunc,sparse status=none
rm "$work/boot.fat"
log "boot partition: $(du -sh "$boot" | cut -f1) ($(ls "$boot" | wc -l) entries)"

mke2fs -q -t ext4 -L rootfs -d "$root" "$work/root.ext4" "${root_mib}M"
dd if="$work/root.ext4" of="$img" bs=1M seek=$(( 4 + boot_mib )) conv=notrunc,sparse status=none
rm "$work/root.ext4"
log "root partition: ${root_mib} MiB, $(( root_bytes / 1048576 )) MiB used"

# --- into the cache ----------------------------------------------------------------------------
cp "$work/manifest" "$cache/base-$key.manifest"
mv "$img" "$cached"
find "$cache" -maxdepth 1 -name 'base-*' ! -name "base-$key.*" -delete
cp --sparse=always "$cached" "$out.tmp"
mv "$out.tmp" "$out"
log "done -> $out (kernel $kver, disk signature $sig)"
