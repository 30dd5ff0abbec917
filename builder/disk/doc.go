// Package disk provides MBR partition tables with an extended partition and logical
// partitions: planning an aligned layout, writing it (MBR plus EBR chain, with a disk
// signature) and reading it back.
package disk
