package basegen

import "encoding/hex"

// The text of the generated Debian 12 / Raspberry Pi OS files. Users and groups are the
// system accounts of a bookworm Lite image before first boot: there is no default user.

const passwd = `root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
games:x:5:60:games:/usr/games:/usr/sbin/nologin
man:x:6:12:man:/var/cache/man:/usr/sbin/nologin
lp:x:7:7:lp:/var/spool/lpd:/usr/sbin/nologin
mail:x:8:8:mail:/var/mail:/usr/sbin/nologin
news:x:9:9:news:/var/spool/news:/usr/sbin/nologin
uucp:x:10:10:uucp:/var/spool/uucp:/usr/sbin/nologin
proxy:x:13:13:proxy:/bin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
backup:x:34:34:backup:/var/backups:/usr/sbin/nologin
list:x:38:38:Mailing List Manager:/var/list:/usr/sbin/nologin
irc:x:39:39:ircd:/run/ircd:/usr/sbin/nologin
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin
systemd-timesync:x:997:997:systemd Time Synchronization:/:/usr/sbin/nologin
messagebus:x:100:107::/nonexistent:/usr/sbin/nologin
sshd:x:101:65534::/run/sshd:/usr/sbin/nologin
`

const group = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
news:x:9:
uucp:x:10:
man:x:12:
proxy:x:13:
kmem:x:15:
dialout:x:20:
fax:x:21:
voice:x:22:
cdrom:x:24:
floppy:x:25:
tape:x:26:
sudo:x:27:
audio:x:29:
dip:x:30:
www-data:x:33:
backup:x:34:
operator:x:37:
list:x:38:
irc:x:39:
src:x:40:
shadow:x:42:
utmp:x:43:
video:x:44:
sasl:x:45:
plugdev:x:46:
staff:x:50:
games:x:60:
users:x:100:
nogroup:x:65534:
systemd-journal:x:999:
systemd-network:x:998:
systemd-timesync:x:997:
input:x:101:
sgx:x:102:
kvm:x:103:
render:x:104:
netdev:x:105:
_ssh:x:106:
messagebus:x:107:
crontab:x:108:
spi:x:996:
i2c:x:995:
gpio:x:994:
`

const osRelease = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
`

const sshdConfig = `
# This is the sshd server system-wide configuration file.  See
# sshd_config(5) for more information.

Include /etc/ssh/sshd_config.d/*.conf

#Port 22
#AddressFamily any
#ListenAddress 0.0.0.0
#ListenAddress ::

#HostKey /etc/ssh/ssh_host_rsa_key
#HostKey /etc/ssh/ssh_host_ecdsa_key
#HostKey /etc/ssh/ssh_host_ed25519_key

#PermitRootLogin prohibit-password
#PubkeyAuthentication yes

#AuthorizedKeysFile	.ssh/authorized_keys .ssh/authorized_keys2

#PasswordAuthentication yes
#PermitEmptyPasswords no

# Change to yes to enable challenge-response passwords (beware issues with
# some PAM modules and threads)
KbdInteractiveAuthentication no

UsePAM yes

X11Forwarding yes
PrintMotd no

# Allow client to pass locale environment variables
AcceptEnv LANG LC_*

# override default of no subsystems
Subsystem	sftp	/usr/lib/openssh/sftp-server
`

// tzUTC is tzdata's Etc/UTC: TZif version 2, no transitions, one type "UTC", footer "UTC0".
var tzUTC = string(mustHex("545a69663200000000000000000000000000000000000000000000000000000000000000000000010000000400000000000055544300" +
	"545a696632000000000000000000000000000000000000000000000000000000000000000000000100000004000000000000555443000a555443300a"))

// dpkgPackages are the names of the packages in dpkgStatus, as dpkg names their info files.
var dpkgPackages = []string{"base-files", "bash", "coreutils", "iputils-ping", "libc6:arm64", "libssl3:arm64", "linux-image-" + kernelRelease, "openssh-server", "raspberrypi-sys-mods", "raspi-firmware", "sudo", "systemd", "tzdata", "zlib1g:arm64"}

// dpkgStatus is /var/lib/dpkg/status: stanzas as dpkg writes them, sorted by package name.
const dpkgStatus = `Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 340
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: arm64
Multi-Arch: foreign
Version: 12.4+deb12u8
Replaces: base, dpkg (<= 1.15.0), miscutils
Provides: base
Conffiles:
 /etc/debian_version 9b4b2f2e2d7d3d4ac2ab5e8a6c6c1b5e
 /etc/issue 9f7cbb1e1b1f0bd3f2d1d6a4c3e5f0e7
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy of a Debian system, and
 several important miscellaneous files, such as /etc/debian_version,
 /etc/host.conf, /etc/issue, /etc/motd, /etc/profile, and others,
 and the text of several common licenses in use on Debian systems.
Homepage: https://salsa.debian.org/debian/base-files

Package: bash
Essential: yes
Status: install ok installed
Priority: required
Section: shells
Installed-Size: 6470
Maintainer: Matthias Klose <doko@debian.org>
Architecture: arm64
Multi-Arch: foreign
Version: 5.2.15-2+b7
Replaces: bash-completion (<< 20060301-0), bash-doc (<= 2.05-1)
Depends: base-files (>= 2.1.12), debianutils (>= 5.6-0.1)
Pre-Depends: libc6 (>= 2.36), libtinfo6 (>= 6)
Recommends: bash-completion (>= 20060301-0)
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter that executes
 commands read from the standard input or from a file.  Bash also
 incorporates useful features from the Korn and C shells (ksh and csh).
Homepage: http://tiswww.case.edu/php/chet/bash/bashtop.html

Package: coreutils
Essential: yes
Status: install ok installed
Priority: required
Section: utils
Installed-Size: 15576
Maintainer: Michael Stone <mstone@debian.org>
Architecture: arm64
Multi-Arch: foreign
Version: 9.1-1
Pre-Depends: libacl1 (>= 2.2.23), libattr1 (>= 1:2.4.44), libc6 (>= 2.34), libgmp10 (>= 2:6.2.1+dfsg1), libselinux1 (>= 3.1~), libssl3 (>= 3.0.0)
Description: GNU core utilities
 This package contains the basic file, shell and text manipulation
 utilities which are expected to exist on every operating system.
Homepage: https://www.gnu.org/software/coreutils/

Package: iputils-ping
Status: install ok installed
Priority: important
Section: net
Installed-Size: 131
Maintainer: Noah Meyerhans <noahm@debian.org>
Architecture: arm64
Source: iputils
Version: 3:20221126-1+deb12u1
Provides: ping
Depends: libc6 (>= 2.34), libcap2 (>= 1:2.10), libidn2-0 (>= 0.6)
Recommends: libcap2-bin
Description: Tools to test the reachability of network hosts
 The ping command sends ICMP ECHO_REQUEST packets to a host in order to
 test if the host is reachable via the network.
Homepage: https://github.com/iputils/iputils/

Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 11885
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: arm64
Multi-Arch: same
Source: glibc
Version: 2.36-9+rpt2+deb12u9
Depends: libgcc-s1
Recommends: libidn2-0 (>= 2.0.5~)
Suggests: glibc-doc, debconf | debconf-2.0, libc-l10n, locales, libnss-nis, libnss-nisplus
Breaks: busybox (<< 1.30.1-6), hurd (<< 1:0.9.git20220301-2), ioquake3 (<< 1.36+u20200211.f2c61c1~dfsg-2~), nscd (<< 2.36), openssh-server (<< 1:8.1p1-5)
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system. This package includes shared versions of the standard C library
 and the standard math library, as well as many others.
Homepage: https://www.gnu.org/software/libc/libc.html

Package: libssl3
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 5784
Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>
Architecture: arm64
Multi-Arch: same
Source: openssl
Version: 3.0.15-1~deb12u1
Depends: libc6 (>= 2.34)
Description: Secure Sockets Layer toolkit - shared libraries
 This package is part of the OpenSSL project's implementation of the SSL
 and TLS cryptographic protocols for secure communication over the
 Internet.
Homepage: https://www.openssl.org/

Package: linux-image-6.6.62+rpt-rpi-v8
Status: install ok installed
Priority: optional
Section: kernel
Installed-Size: 35120
Maintainer: Serge Schneider <serge@raspberrypi.com>
Architecture: arm64
Source: linux
Version: 1:6.6.62-1+rpt1
Provides: wireguard-modules (= 1.0.0)
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Suggests: firmware-linux-free, linux-doc-6.6, debian-kernel-handbook
Description: Linux 6.6 for Raspberry Pi v8, Raspberry Pi
 The Linux kernel 6.6 and modules for use on Raspberry Pi v8.
Homepage: https://github.com/raspberrypi/linux/

Package: openssh-server
Status: install ok installed
Priority: optional
Section: net
Installed-Size: 1793
Maintainer: Debian OpenSSH Maintainers <debian-ssh@lists.debian.org>
Architecture: arm64
Multi-Arch: foreign
Source: openssh
Version: 1:9.2p1-2+deb12u3
Replaces: openssh-client (<< 1:7.9p1-8), ssh (<< 1:6.5p1-2), ssh-krb5 (<< 1:6.5p1-2)
Provides: ssh-server
Depends: adduser, libpam-modules, libpam-runtime, lsb-base, openssh-client (= 1:9.2p1-2+deb12u3), openssh-sftp-server, procps, ucf, debconf (>= 0.5) | debconf-2.0, runit-helper (>= 2.14.0~), libaudit1 (>= 1:2.2.1), libc6 (>= 2.36), libcom-err2 (>= 1.43.9), libcrypt1 (>= 1:4.1.0), libgssapi-krb5-2 (>= 1.17), libkrb5-3 (>= 1.13~alpha1+dfsg), libpam0g (>= 0.99.7.1), libselinux1 (>= 3.1~), libssl3 (>= 3.0.11), libsystemd0, libwrap0 (>= 7.6-4~), zlib1g (>= 1:1.1.4)
Recommends: default-logind | logind | libpam-systemd, ncurses-term, xauth
Conffiles:
 /etc/default/ssh 500e3cf069fe9a7b9936108eb9d9c035
 /etc/init.d/ssh 3649a6fe8c18ad1d5245fd91737de507
Description: secure shell (SSH) server, for secure access from remote machines
 This is the portable version of OpenSSH, a free implementation of
 the Secure Shell protocol as specified by the IETF secsh working
 group.
Homepage: https://www.openssh.com/

Package: raspberrypi-sys-mods
Status: install ok installed
Priority: optional
Section: admin
Installed-Size: 148
Maintainer: Serge Schneider <serge@raspberrypi.com>
Architecture: arm64
Version: 20241105
Depends: libgpiod2, python3, udev, rfkill, jq
Description: System tweaks for the Raspberry Pi
 Various modifications to improve the Raspberry Pi experience,
 including first boot partition resizing.
Homepage: https://github.com/RPi-Distro/raspberrypi-sys-mods

Package: raspi-firmware
Status: install ok installed
Priority: optional
Section: kernel
Installed-Size: 36010
Maintainer: Serge Schneider <serge@raspberrypi.com>
Architecture: all
Multi-Arch: foreign
Source: raspberrypi-firmware
Version: 1:1.20241126-1
Replaces: raspberrypi-bootloader
Provides: raspberrypi-bootloader
Depends: dosfstools
Description: Raspberry Pi family GPU firmware and bootloaders
 This package contains the firmware for the VideoCore GPU and the
 bootloader used on Raspberry Pi computers.
Homepage: https://github.com/raspberrypi/firmware

Package: sudo
Status: install ok installed
Priority: optional
Section: admin
Installed-Size: 6199
Maintainer: Sudo Maintainers <sudo@packages.debian.org>
Architecture: arm64
Version: 1.9.13p3-1+deb12u1
Replaces: sudo-ldap
Depends: libaudit1 (>= 1:2.2.1), libc6 (>= 2.34), libpam0g (>= 0.99.7.1), libselinux1 (>= 3.1~), zlib1g (>= 1:1.2.0.2), libpam-modules, lsb-base
Conflicts: sudo-ldap
Conffiles:
 /etc/pam.d/sudo 85da64f888739f193fc0fa896680030e
 /etc/sudoers 45437b4e86fba2ab890ac81db2ec3606
Description: Provide limited super user privileges to specific users
 Sudo is a program designed to allow a sysadmin to give limited root
 privileges to users and log root activity.  The basic philosophy is to give
 as few privileges as possible but still allow people to get their work done.
Homepage: https://www.sudo.ws/

Package: systemd
Status: install ok installed
Priority: important
Section: admin
Installed-Size: 25542
Maintainer: Debian systemd Maintainers <pkg-systemd-maintainers@lists.alioth.debian.org>
Architecture: arm64
Multi-Arch: foreign
Version: 252.33-1~deb12u1
Replaces: systemd-timesyncd (<< 252.33-1~deb12u1)
Provides: systemd-sysusers (= 252.33-1~deb12u1), systemd-tmpfiles (= 252.33-1~deb12u1)
Depends: libacl1 (>= 2.2.23), libapparmor1 (>= 2.13), libaudit1 (>= 1:2.2.1), libblkid1 (>= 2.24), libc6 (>= 2.34), libcap2 (>= 1:2.10), libcryptsetup12 (>= 2:2.4), libfdisk1 (>= 2.33), libgcrypt20 (>= 1.10.0), libkmod2 (>= 5~), liblz4-1 (>= 0.0~r130), liblzma5 (>= 5.1.1alpha+20120614), libmount1 (>= 2.30), libseccomp2 (>= 2.3.1), libselinux1 (>= 3.1~), libssl3 (>= 3.0.0), libsystemd-shared (= 252.33-1~deb12u1), libsystemd0 (= 252.33-1~deb12u1), libzstd1 (>= 1.5.2), mount
Pre-Depends: libblkid1 (>= 2.24), libc6 (>= 2.34), libcap2 (>= 1:2.10), libgcrypt20 (>= 1.10.0), liblz4-1 (>= 0.0~r122), liblzma5 (>= 5.1.1alpha+20120614), libmount1 (>= 2.26.2), libselinux1 (>= 3.1~), libssl3 (>= 3.0.0), libsystemd0 (>= 250), libzstd1 (>= 1.5.2)
Description: system and service manager
 systemd is a system and service manager for Linux. It provides aggressive
 parallelization capabilities, uses socket and D-Bus activation for starting
 services, offers on-demand starting of daemons, keeps track of processes
 using Linux control groups, maintains mount and automount points and
 implements an elaborate transactional dependency-based service control logic.
Homepage: https://www.freedesktop.org/wiki/Software/systemd

Package: tzdata
Status: install ok installed
Priority: required
Section: localization
Installed-Size: 2605
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: all
Multi-Arch: foreign
Version: 2024b-0+deb12u1
Replaces: libc0.1, libc0.3, libc6, libc6.1
Provides: tzdata-bookworm
Depends: debconf (>= 0.5) | debconf-2.0
Description: time zone and daylight-saving time data
 This package contains data required for the implementation of
 standard local time for many representative locations around the
 globe.
Homepage: https://www.iana.org/time-zones

Package: zlib1g
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 169
Maintainer: Mark Brown <broonie@debian.org>
Architecture: arm64
Multi-Arch: same
Source: zlib
Version: 1:1.2.13.dfsg-1
Provides: libz1
Depends: libc6 (>= 2.17)
Breaks: libxml2 (<< 2.7.6.dfsg-2), texlive-binaries (<< 2009-12)
Conflicts: zlib1 (<= 1:1.0.4-7)
Description: compression library - runtime
 zlib is a library implementing the deflate compression method found
 in gzip and PKZIP.
Homepage: http://zlib.net/
`

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
