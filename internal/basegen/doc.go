// Package basegen provides a generator of Raspberry Pi OS-like base disk images (MBR, FAT32
// bootfs, ext4 rootfs) built rootless and offline from Debian's filesystem tools, for the demo,
// the tests and the benchmarks.
package basegen
