// Package personalize writes per-device settings (edgeimg/device.yaml) into the config
// partition of an edgeimg image file, so that one built image can be made into a card for one
// device without rebuilding.
package personalize
