// Package certmanager provides cert-manager for the K3s payload, air-gapped: the vendored Helm
// chart of each supported release packed into a K3s HelmChart manifest (chartContent), and the
// self-signed CA ClusterIssuers that services use for app-level mTLS certificates.
package certmanager
