// Package otatest builds the synthetic Raspberry Pi 4 card and the signed OTA releases that
// the tests of ota/apply, agent/ota and agent/daemon share: a file-backed card (hw/filecard)
// whose slot A holds release 1, and releases with a FAT-looking boot part carrying slot A's
// cmdline.txt and a system part of deterministic bytes.
//
// It is for tests only: no non-test code may import it.
package otatest
