// Package fleet provides the fleet server: an http.Handler for device enrollment, heartbeats,
// the admin API and metrics, backed by a store.Store and the fleet CA.
package fleet
