#!/usr/bin/env bash
# Vendors the cert-manager Helm chart of VERSION into manifests/certmanager/chart-VERSION/, offline
# apart from the Go module proxy: the module zip of github.com/cert-manager/cert-manager holds
# the chart's sources (deploy/charts/cert-manager, deploy/crds), and this script assembles them
# the way cert-manager's make/manifests.mk does for the released chart (helm-chart target):
#   Chart.yaml       from Chart.template.yaml, version and appVersion set to VERSION,
#                    artifacthub.io/prerelease "false" and the signKey annotation added;
#   README.md        from README.template.md with {{RELEASE_VERSION}} replaced;
#   templates/crds.yaml  deploy/crds/*.yaml joined with "---" (hack/concat-yaml.sh);
#   values.yaml, values.schema.json, templates/*  copied as they are.
# Usage: manifests/certmanager/vendor-chart.sh v1.16.2   (from the repository root)
set -euo pipefail
version=${1:?usage: vendor-chart.sh VERSION}
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && go mod init scratch >/dev/null 2>&1 &&
	GOFLAGS=-mod=mod go mod download -json "github.com/cert-manager/cert-manager@$version" >"$scratch/dl.json")
src=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' "$scratch/dl.json")
zip=$(sed -n 's/^\t"Zip": "\(.*\)",$/\1/p' "$scratch/dl.json")
sum=$(sed -n 's/^\t"Sum": "\(.*\)",$/\1/p' "$scratch/dl.json")
chart="$src/deploy/charts/cert-manager"
out="$here/chart-$version"
rm -rf "$out"
mkdir -p "$out/cert-manager/templates"
cp "$src/LICENSE" "$out/LICENSE"
cp "$chart/values.yaml" "$chart/values.schema.json" "$out/cert-manager/"
cp "$chart"/templates/*.yaml "$chart/templates/_helpers.tpl" "$chart/templates/NOTES.txt" "$out/cert-manager/templates/"
sed -e "s:{{RELEASE_VERSION}}:$version:g" <"$chart/README.template.md" >"$out/cert-manager/README.md"
{
	sed -e "s/^version: v0.0.0$/version: $version/" -e "s/^appVersion: v0.0.0$/appVersion: $version/" \
		-e 's/"{{IS_PRERELEASE}}"/"false"/' \
		-e '/^  artifacthub.io\/prerelease:/a\  artifacthub.io/signKey: |\n    fingerprint: __FP__\n    url: __URL__' \
		"$chart/Chart.template.yaml"
} | sed -e "s|__FP__|$(sed -n 's/^fingerprint: //p' "$chart/signkey_annotation.txt")|" \
	-e "s|__URL__|$(sed -n 's/^url: //p' "$chart/signkey_annotation.txt")|" >"$out/cert-manager/Chart.yaml"
[ -n "$(tail -c1 "$out/cert-manager/Chart.yaml")" ] && echo >>"$out/cert-manager/Chart.yaml"
first=1
for f in "$src"/deploy/crds/*.yaml; do
	if [ $first = 0 ]; then printf '\n---\n'; fi
	cat "$f"
	first=0
done >"$out/cert-manager/templates/crds.yaml"
chmod -R u+w,go-w "$out"
find "$out" -type f -exec chmod 0644 {} +
cat >"$out/README.md" <<MD
# cert-manager $version Helm chart (vendored)

This directory is data, not code written for edgeimg: the Helm chart of
[cert-manager](https://github.com/cert-manager/cert-manager) $version, Apache-2.0 (see LICENSE,
copied from the same source). edgeimg packs \`cert-manager/\` into the \`chartContent\` of a K3s
HelmChart so that K3s installs cert-manager at boot without network.

Where it came from: the Go module proxy's zip of \`github.com/cert-manager/cert-manager@$version\`
($sum), directories \`deploy/charts/cert-manager\` and \`deploy/crds\`, assembled as
cert-manager's \`make/manifests.mk\` assembles the released chart (Chart.yaml from
Chart.template.yaml with version/appVersion $version; templates/crds.yaml = deploy/crds/*.yaml
joined with \`---\`; README.md from README.template.md). The published
\`cert-manager-$version.tgz\` is made by \`helm package\` from the same files.

Refresh or add a version (from the repository root, with Go and the module proxy reachable):

    manifests/certmanager/vendor-chart.sh vX.Y.Z

then add images/certmanager/vX.Y.Z.txt (the test in manifests/certmanager checks it against the
chart's values.yaml) and a plan entry if the resource figures change.
MD
echo "vendored $version from $zip into $out"
