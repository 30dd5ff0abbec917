// Package store provides the fleet server's storage: the Store interface and its SQLite
// (embedded, default) and PostgreSQL implementations, with their migrations.
package store
