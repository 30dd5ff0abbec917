package builder

// The units and scripts of the K3s stage.
//
// K3sServerUnit and K3sAgentUnit are what the official installer (get.k3s.io) writes for
// `INSTALL_K3S_EXEC=server` and `agent`: Type=notify for the server, Type=exec for the agent
// (as the installer does), the environment files, KillMode=process so that containers survive
// a restart of K3s, Delegate=yes for the cgroups, no resource limits, and the kernel modules
// K3s needs. They are installed but not enabled: edgeimg-agent starts the unit of the role the
// device has (a standalone server until the fleet assigns one) and disables the other.
const (
	K3sServerUnit = `[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-/etc/systemd/system/k3s.service.env
KillMode=process
Delegate=yes
User=root
# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=/bin/sh -xc '! /usr/bin/systemctl is-enabled --quiet nm-cloud-setup.service 2>/dev/null'
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/k3s \
    server \

`

	K3sAgentUnit = `[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=exec
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-/etc/systemd/system/k3s-agent.service.env
KillMode=process
Delegate=yes
User=root
# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=/bin/sh -xc '! /usr/bin/systemctl is-enabled --quiet nm-cloud-setup.service 2>/dev/null'
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/k3s \
    agent \

`

	// K3sPrepareUnit runs K3sPrepareSh before either K3s unit; both require it (the
	// .requires/ links), so K3s never starts without its images and manifests in place.
	K3sPrepareUnit = `[Unit]
Description=edgeimg: make the K3s images and manifests of the system slot visible to K3s
After=local-fs.target systemd-tmpfiles-setup.service
Before=k3s.service k3s-agent.service
RequiresMountsFor=/var/lib
ConditionPathIsDirectory=/usr/lib/edgeimg/k3s

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/edgeimg/k3s-prepare

[Install]
RequiredBy=k3s.service k3s-agent.service
`

	// K3sPruneUnit runs K3sPruneSh once the K3s server is up (k3s.service is Type=notify), when
	// K3sPrepareSh set aside manifests this release no longer ships. Only servers run it: an
	// agent has no API of its own, and its server deletes the objects.
	K3sPruneUnit = `[Unit]
Description=edgeimg: delete the objects of manifests this release no longer ships
After=k3s.service
Requisite=k3s.service
ConditionDirectoryNotEmpty=/var/lib/edgeimg/k3s-manifests-dropped

[Service]
Type=oneshot
ExecStart=/usr/lib/edgeimg/k3s-prune
TimeoutStartSec=20min

[Install]
WantedBy=k3s.service
`

	// K3sPrepareSh links each image archive of the slot into /var/lib/rancher/k3s/agent/images
	// (K3s imports every .tar there when it starts; links to archives the slot no longer has
	// are removed) and copies each manifest into /var/lib/rancher/k3s/server/manifests.
	// Manifests are copied, not linked: the copy is what deletes a dropped manifest's objects
	// after the update that dropped it, when the old slot's file is gone. The names this
	// release ships are listed in /var/lib/edgeimg/k3s-manifests.list; a name the previous
	// list had and this release does not is moved from server/manifests (K3s would keep
	// applying it) to /var/lib/edgeimg/k3s-manifests-dropped/ for K3sPruneSh. Files K3s writes
	// itself (coredns.yaml, traefik.yaml, …) are never on the list and never touched.
	// EDGEIMG_ROOT prefixes every path (tests).
	K3sPrepareSh = `#!/bin/sh
# edgeimg-k3s-prepare.service: make the K3s payload of the read-only system slot visible to
# K3s. Idempotent; runs before k3s.service and k3s-agent.service on every boot.
set -eu
root="${EDGEIMG_ROOT:-}"
slot=/usr/lib/edgeimg/k3s
data="$root/var/lib/rancher/k3s"
state="$root/var/lib/edgeimg"
list="$state/k3s-manifests.list"
dropped="$state/k3s-manifests-dropped"
mkdir -p "$data/agent/images" "$data/server/manifests" "$state" "$dropped"

# Images: one symlink per archive; links into the slot whose target is gone are removed.
for f in "$root$slot"/images/*; do
	[ -f "$f" ] || continue
	n=${f##*/}
	if [ "$(readlink "$data/agent/images/$n" 2>/dev/null || true)" != "$slot/images/$n" ]; then
		ln -sfn "$slot/images/$n" "$data/agent/images/$n"
	fi
done
for l in "$data"/agent/images/*; do
	[ -L "$l" ] || continue
	t=$(readlink "$l")
	case "$t" in
	"$slot"/images/*) [ -e "$root$t" ] || rm -f "$l" ;;
	esac
done

# Manifests: copied when they differ; the list says which files of server/manifests are ours.
new="$list.new"
: >"$new"
for f in "$root$slot"/manifests/*; do
	[ -f "$f" ] || continue
	n=${f##*/}
	if ! cmp -s "$f" "$data/server/manifests/$n"; then
		cp "$f" "$data/server/manifests/.$n.tmp"
		mv -f "$data/server/manifests/.$n.tmp" "$data/server/manifests/$n"
	fi
	rm -f "$dropped/$n"
	printf '%s\n' "$n" >>"$new"
done
if [ -f "$list" ]; then
	while IFS= read -r n; do
		[ -n "$n" ] || continue
		grep -qxF -- "$n" "$new" && continue
		if [ -f "$data/server/manifests/$n" ]; then
			mv -f "$data/server/manifests/$n" "$dropped/$n"
		fi
	done <"$list"
fi
sync "$new" 2>/dev/null || true
mv -f "$new" "$list"
`

	// K3sPruneSh waits for the K3s API (up to 10 minutes), deletes the objects of every
	// manifest K3sPrepareSh set aside and K3s's Addon record of it, and removes the manifest
	// once that worked; what fails is kept for the next boot. EDGEIMG_ROOT prefixes the paths
	// and EDGEIMG_KUBECTL replaces "k3s kubectl" (tests).
	K3sPruneSh = `#!/bin/sh
# edgeimg-k3s-prune.service: delete the objects of manifests an earlier release shipped and
# this one dropped (K3s never deletes them itself).
set -u
root="${EDGEIMG_ROOT:-}"
dropped="$root/var/lib/edgeimg/k3s-manifests-dropped"
kubectl="${EDGEIMG_KUBECTL:-/usr/local/bin/k3s kubectl}"
export KUBECONFIG="${KUBECONFIG:-/var/lib/rancher/k3s/k3s.yaml}"
i=0
until $kubectl get --raw=/readyz >/dev/null 2>&1; do
	i=$((i + 1))
	if [ "$i" -ge 120 ]; then
		echo "edgeimg-k3s-prune: the K3s API is not ready; the dropped manifests stay for the next boot" >&2
		exit 1
	fi
	sleep 5
done
status=0
for f in "$dropped"/*; do
	[ -f "$f" ] || continue
	n=${f##*/}
	if $kubectl delete --ignore-not-found --wait=false -f "$f"; then
		$kubectl -n kube-system delete --ignore-not-found addons.k3s.cattle.io "${n%.*}" || true
		rm -f "$f"
	else
		echo "edgeimg-k3s-prune: could not delete the objects of $n; kept for the next boot" >&2
		status=1
	fi
done
exit $status
`
)
