// Package identity provides the device's fleet identity on the data partition: its ed25519
// key, the CSR it enrolls with, its certificate and the fleet CA, and the enrollment record.
package identity
