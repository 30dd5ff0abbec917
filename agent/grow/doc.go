// Package grow provides the first-boot growth of the data partition: it extends the last
// logical partition of the image's MBR layout (and the extended partition holding it) to the end
// of the card, tells the kernel, and supplies the systemd unit that runs it before the data
// filesystem is created and mounted.
package grow
