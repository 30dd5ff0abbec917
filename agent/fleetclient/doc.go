// Package fleetclient provides the device's client of the fleet server: enrollment, renewal
// and heartbeats over HTTPS that trusts only the fleet CA, with errors that tell a refusal
// from an outage and a clock that is behind.
package fleetclient
