// Package fatfs provides reproducible FAT32 filesystems written into a window of a disk
// image file, built with go-diskfs and corrected so that fsck.vfat accepts them.
package fatfs
