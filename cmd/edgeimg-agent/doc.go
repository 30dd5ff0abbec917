// Command edgeimg-agent provides the on-device side of edgeimg: first-boot growth of the data
// partition (grow-data), the fleet agent (run: settings import, enrollment, K3s role,
// heartbeats), the factory reset (reset) and its version.
package main
