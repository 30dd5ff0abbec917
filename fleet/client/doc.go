// Package client provides a client of the fleet server's admin API, for the edgeimg CLI.
package client
