// Package rootfs provides the builder's changes to the base root filesystem: the read-only
// slot with its state redirected to the data partition, login users, first-boot units, and the
// user's overlays.
package rootfs
