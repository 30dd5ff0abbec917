// Package delta makes update downloads small: a part of a release is cut into content-defined
// chunks (Rabin fingerprints, github.com/restic/chunker) listed in an Index, and a device
// fetches only the chunks its card does not already hold.
//
// Content-defined boundaries follow the content, not the offset: when one file of the system
// filesystem grows or shrinks, the data after it moves, but its chunks (and their hashes)
// stay the same, so only the chunks around the change are new.
//
// On the device: Have records the chunks of the active slot (Scan), Stream assembles a
// release's bundle stream from them, from chunks an interrupted install left in the inactive
// slot, and from chunks fetched (Remote, the fleet's release routes), and ota/apply.Apply
// installs that stream as it installs a full bundle. Remote.Bundle is the full download,
// resumed with HTTP ranges, for a fleet without indexes.
package delta
