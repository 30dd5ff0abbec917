// Package filecard provides a file-backed Raspberry Pi 4 SD card for tests: a disk image file
// whose autoboot.txt sector is switched by the real rpi4.Switch, a directory standing for
// /proc/device-tree/chosen/bootloader, and a simulated firmware that powers the card on.
package filecard
