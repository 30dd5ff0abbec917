package store

import "time"

// MinCommitGap is minCommitGap, for the tests.
const MinCommitGap = minCommitGap

// SetCommitGap sets the least time between two batches under load; 0 starts each batch as
// soon as the last one is handed to a writer (no pacing). Call it before the first heartbeat.
func SetCommitGap(s *SQL, d time.Duration) { s.hb.gap = d }
