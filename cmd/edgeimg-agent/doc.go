// Command edgeimg-agent provides the on-device side of edgeimg: first-boot growth of the data
// partition (grow-data) and its version.
package main
