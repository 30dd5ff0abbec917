// Package fleet provides the Pulumi resources that run the edgeimg fleet server on Kubernetes.
package fleet
