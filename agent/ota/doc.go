// Package ota is the device side of over-the-air updates: the Updater learns its target
// release from the fleet, downloads it (the chunks its card lacks, or the whole bundle) into
// the inactive slot, arms and reboots into a trial boot, checks the new release's health and
// commits it, or goes back to the old release and restores the K3s state it had.
package ota
