// Package base reads a base OS disk image (a raw MBR or GPT disk with a FAT boot partition
// and an ext4 root partition) without root privileges, turning its boot files and root
// filesystem into trees with full metadata and lazily read contents, with a warm cache that
// makes reading the same root filesystem again nearly free.
package base
