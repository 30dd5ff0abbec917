// Package cli provides edgeimg's cobra commands; each command validates its flags and calls
// one library function.
package cli
