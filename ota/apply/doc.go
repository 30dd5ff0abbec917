// Package apply provides the device side of an OTA update: it verifies a bundle against the
// trusted keys and the installed release, streams its parts into the inactive slot's
// partitions while checking their hashes, and arms the board's one-shot trial boot.
package apply
