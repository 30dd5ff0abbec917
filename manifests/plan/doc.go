// Package plan provides the memory and CPU budget of an edgeimg payload on its board: the
// OS, K3s, the agent, cert-manager and each workload at the minimum and maximum replicas of
// its HPA, against the board's RAM and cores.
package plan
