// Package tree provides the in-memory root filesystem the builder assembles: entries carry
// their full metadata (owner, mode, times, device numbers, extended attributes, links) while
// file contents stay where they live (base image, cache, overlay) and are streamed on demand.
package tree
