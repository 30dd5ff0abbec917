// Package daemon provides the agent's first-boot and steady-state loop: import the device
// settings, make the identity, run K3s at once (standalone until the fleet says otherwise),
// enroll with backoff, apply the assigned role, heartbeat, renew, and reset on order.
package daemon
