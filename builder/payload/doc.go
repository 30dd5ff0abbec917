// Package payload provides the K3s payload stage of the build: it checks the manifests,
// plans the memory budget, pulls every image for linux/arm64 and puts the air-gap image
// archives and the manifests into the system slot's tree.
package payload
