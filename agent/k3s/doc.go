// Package k3s provides the device's K3s role: its config file on the data partition, the
// check that K3s has state, starting the service through a Runner, and the reset.
package k3s
