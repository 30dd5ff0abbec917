// Package inspect provides a read-only look at a disk image: its partition table (MBR or
// GPT), filesystems and boot configuration, and, for an image edgeimg made, its release and
// what the builder added.
package inspect
