package grow

import (
	"fmt"
	"path"
	"strings"
)

// GrowUnitName is the name of the systemd unit that grows the data partition.
const GrowUnitName = "edgeimg-grow-data.service"

// AgentPath is where the builder installs the agent binary in the system image.
const AgentPath = "/usr/local/bin/edgeimg-agent"

// DataMountUnit is the mount unit of the data partition, mounted at /var.
const DataMountUnit = "var.mount"

// UnitEscapePath escapes an absolute path into a unit name prefix the way
// `systemd-escape --path` does: the path is simplified (duplicate slashes, "." components and
// the trailing slash dropped), the leading slash removed, the other slashes become "-", and
// every byte other than ASCII letters, digits, ":", "_" and "." (and a leading ".") becomes
// \xNN. The root directory is "-". Paths with ".." components, which systemd refuses, are
// escaped as they are.
func UnitEscapePath(p string) string {
	var parts []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			parts = append(parts, c)
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	s := strings.Join(parts, "/")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c == '.' && i == 0:
			fmt.Fprintf(&b, `\x%02x`, c)
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == ':', c == '_', c == '.':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}

// dataDevice returns the device path of the data partition as systemd's fstab generator
// spells it for "PARTUUID=<id>" in /etc/fstab.
func dataDevice(partuuid string) string {
	return path.Join("/dev/disk/by-partuuid", strings.ToLower(partuuid))
}

// GrowUnitRequiredBy returns the units that require the grow unit: the mount of /var and
// systemd-makefs for the data partition's device, so that neither runs unless the partition
// has been grown. To enable the unit the builder links
// /etc/systemd/system/<unit>.requires/edgeimg-grow-data.service to
// /etc/systemd/system/edgeimg-grow-data.service for each, as `systemctl enable` does.
func GrowUnitRequiredBy(partuuid string) []string {
	return []string{DataMountUnit, "systemd-makefs@" + UnitEscapePath(dataDevice(partuuid)) + ".service"}
}

// GrowUnit returns the text of edgeimg-grow-data.service for the data partition with the
// given MBR PARTUUID ("5eed1e55-07"). The builder always passes a PARTUUID it made itself;
// GrowUnit panics when partuuid is not of that form, since it would end up in the unit.
//
// The unit runs on every boot (it is a no-op once the partition fills the card, and it
// finishes a growth a power cut interrupted) after the partition's device appears and before
// systemd creates the data filesystem (x-systemd.makefs), checks it and mounts it on /var.
// It is ordered after the data partition's device but does not require it: on a card cut
// short before the data partition the kernel has no such device, and the agent must still
// run (after the device's timeout) to say so; it then finds the disk through partition 1,
// whose device the unit wants.
//
// When it fails, for instance because the image was written to a card too small for it, the
// boot stops in emergency mode with the agent's message on the console and in the journal:
// OnFailure=emergency.target with replace-irreversibly, and no FailureAction=, so there is no
// reboot loop wearing the card and hiding the message, and nothing is ever formatted on a
// partition that is cut short. `systemctl enable` follows the [Install] section; the rootless
// builder makes the same links itself, one per unit of GrowUnitRequiredBy.
func GrowUnit(partuuid string) string {
	sig, _, err := ParsePARTUUID(partuuid)
	if err != nil {
		panic("grow.GrowUnit: " + err.Error())
	}
	id := strings.ToLower(partuuid)
	dev := UnitEscapePath(dataDevice(id))
	first := UnitEscapePath(dataDevice(fmt.Sprintf("%08x-01", sig)))
	return fmt.Sprintf(`# Installed by edgeimg. Grows the data partition (PARTUUID=%[1]s) to the end of the card
# before its filesystem is made (x-systemd.makefs) and mounted on /var. A no-op once it has.
[Unit]
Description=Grow the data partition to fill the card
DefaultDependencies=no
# After the data partition's device, without requiring it: on a card too short to hold it
# the device never comes, and the agent still has to say why (it finds the card through
# partition 1).
After=%[2]s.device
Wants=%[5]s.device
After=%[5]s.device
Before=systemd-makefs@%[2]s.service systemd-fsck@%[2]s.service %[3]s
Before=local-fs.target shutdown.target
Conflicts=shutdown.target
# A failure stops the boot here, with the agent's message on the console: no reboot loop,
# and no filesystem made on a partition cut short.
OnFailure=emergency.target
OnFailureJobMode=replace-irreversibly

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=%[4]s grow-data --partuuid %[1]s
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=5min

[Install]
RequiredBy=%[3]s systemd-makefs@%[2]s.service
`, id, dev, DataMountUnit, AgentPath, first)
}
