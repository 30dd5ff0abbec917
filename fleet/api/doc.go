// Package api provides the JSON wire types of the fleet server's device and admin APIs and
// their strict, size-limited decoders; the on-device agent and the server share it.
package api
