// Package loadtest simulates a fleet of devices enrolling with and heartbeating to a fleet
// server on a loopback address, and measures throughput, latency and the server's memory.
package loadtest
