// Package releases stores OTA releases for the fleet server: the signed manifest, its
// signature and a chunk index per part, with the parts' chunks content-addressed and shared
// across releases; it serves them back, including the whole bundle laid out again.
package releases
