// Package sbom provides the image's software bill of materials: the base's Debian packages
// (from its dpkg status), the agent and the other components edgeimg adds, as an SPDX 2.3
// JSON document.
package sbom
