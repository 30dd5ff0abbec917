// Package ociartifact pushes a signed update bundle (NAME-BOARD.update) to an OCI registry as
// an artifact — an image manifest with an empty config and the bundle as its one layer — and
// pulls it back to a file, so any registry can serve releases.
package ociartifact
