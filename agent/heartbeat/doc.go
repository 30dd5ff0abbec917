// Package heartbeat provides what a device reports in its heartbeat: memory, data-partition
// use and uptime from /proc and statfs, and its K3s node's readiness and not-ready pods from
// the local Kubernetes API.
package heartbeat
