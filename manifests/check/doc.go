// Package check provides strict decoding of the Kubernetes manifests shipped in an edgeimg
// payload, the policy they must meet to run offline on a small board (resource requests
// and limits, HPAs with real targets, pinned images, LimitRange defaults), and the
// discovery of every image they use.
package check
