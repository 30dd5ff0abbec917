// Package inspect provides a read-only look at a disk image edgeimg made: its partition table,
// filesystems, boot configuration, and what the builder added to the system slot.
package inspect
