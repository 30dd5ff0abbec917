// Package images provides the container images of an edgeimg payload: the K3s system image
// lists per K3s version, reference parsing, pulling one platform (linux/arm64) through
// mirrors and a content-addressed cache, K3s air-gap archives, and building Go images.
package images
