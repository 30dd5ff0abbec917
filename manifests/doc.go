// Package manifests holds the default example manifests of an edgeimg K3s payload
// (telemetry.yaml) and, in subpackages, the telemetry service's source (telemetry), the
// manifest checks (check) and the memory plan (plan).
package manifests
