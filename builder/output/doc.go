// Package output provides the build's published files: the compressed image (reproducible
// multi-threaded zstd, or xz), SHA256SUMS, and atomic writes that leave nothing half-written.
package output
