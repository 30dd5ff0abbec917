// Package builder provides edgeimg's image build: one function, Build, runs the pipeline from a
// spec and a base OS image to a flashable A/B disk image and its companions.
package builder
