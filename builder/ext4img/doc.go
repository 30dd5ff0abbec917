// Package ext4img provides Write, which lays a tree out as a compact, read-only ext4 file
// system at an offset of a disk image, reproducibly and without root, loop devices or mkfs.
package ext4img
