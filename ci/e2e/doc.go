// Package e2e is edgeimg's end-to-end test: it builds a Debian arm64 base image, remasters it
// with `edgeimg build`, boots it in QEMU with the harness playing the Pi firmware's part, checks
// the running system, and updates it over the air from a real fleet server — a good release
// committed after its trial boot, a broken one rolled back by the device itself (`make e2e`;
// those tests carry the build tag e2e, so `go test ./...` runs only the firmware's decision).
package e2e
