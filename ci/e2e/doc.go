// Package e2e is edgeimg's end-to-end test: it builds a Debian arm64 base image, remasters it
// with `edgeimg build`, boots slot A in QEMU and checks the running system (`make e2e`; the
// tests carry the build tag e2e, so `go test ./...` leaves them out).
package e2e
