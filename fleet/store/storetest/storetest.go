package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/fleet/store"
)

// EnvPostgres names the environment variable with the PostgreSQL DSN (a postgres:// URL) for
// tests. Under CI=true a missing DSN fails the tests that need it.
const EnvPostgres = "EDGEIMG_TEST_POSTGRES"

// Backends are the names Each runs with.
var Backends = []string{"sqlite", "postgres"}

// Each runs fn as a subtest with a fresh store of every backend.
func Each(t *testing.T, fn func(t *testing.T, s store.Store)) {
	t.Helper()
	for _, b := range Backends {
		t.Run(b, func(t *testing.T) { fn(t, Open(t, b)) })
	}
}

// Open returns a fresh, empty store of the backend, closed when the test ends.
func Open(t testing.TB, backend string) *store.SQL {
	t.Helper()
	var url string
	switch backend {
	case "sqlite":
		url = filepath.Join(t.TempDir(), "fleet.db")
	case "postgres":
		url = PostgresURL(t)
	default:
		t.Fatalf("unknown backend %q", backend)
	}
	s, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// PostgresURL returns a DSN for a fresh schema in the test database, dropped when the test
// ends. It skips the test when EDGEIMG_TEST_POSTGRES is unset, and fails it under CI=true.
func PostgresURL(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(EnvPostgres)
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set: CI must run the store tests against PostgreSQL", EnvPostgres)
		}
		t.Skipf("%s is not set", EnvPostgres)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "test_" + hex.EncodeToString(b)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE SCHEMA ` + schema); err != nil {
		db.Close()
		t.Fatalf("creating schema %s in %s: %v", schema, dsn, err)
	}
	t.Cleanup(func() {
		_, _ = db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
		db.Close()
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "search_path=" + schema
}
