package manifests

import _ "embed"

// Telemetry is telemetry.yaml: the Namespace, LimitRange, Deployment, Service and HPA of
// the example telemetry ingestion service.
//
//go:embed telemetry.yaml
var Telemetry []byte

// TelemetryImage is the reference telemetry.yaml uses for the image built from
// ./manifests/telemetry.
const TelemetryImage = "ghcr.io/edgeimg/telemetry:v0.1.0"
