// Package bundle provides the signed OTA update bundle (NAME-BOARD.update): its manifest,
// ed25519 signing keys, and a streaming reader that verifies the signature before anything
// else and each part's size and sha256 while it is read.
package bundle
