// Package device provides the device's files as the agent sees them: their paths under a
// root, atomic writes, the stable device ID, and the per-device settings (edgeimg/device.yaml
// on the config partition) imported onto the data partition with NetworkManager keyfiles.
package device
