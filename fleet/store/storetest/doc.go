// Package storetest provides the stores that tests run against: SQLite in a temporary
// directory and, when EDGEIMG_TEST_POSTGRES names a database, PostgreSQL in a fresh schema.
package storetest
