// Package rpi4 provides the Raspberry Pi 4 board: its MBR A/B layout, the firmware's
// autoboot.txt/tryboot_a_b slot switch, and the boot partitions' config.txt and cmdline.txt.
package rpi4
