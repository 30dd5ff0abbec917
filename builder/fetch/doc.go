// Package fetch provides a content-addressed download cache that brings base disk images
// (local or over HTTP, raw or xz/zstd/gzip/bzip2 compressed) to a verified raw image on local disk.
package fetch
