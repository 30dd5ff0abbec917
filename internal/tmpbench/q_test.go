package tmpbench

import (
	"database/sql"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

func TestQ(t *testing.T) {
	db, err := sql.Open("sqlite", "file:/tmp/ltfleet/fleet.db")
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := db.Query(`EXPLAIN QUERY PLAN SELECT state, COUNT(*) FROM devices GROUP BY state`)
	for rows.Next() {
		var a, b, c int
		var d string
		rows.Scan(&a, &b, &c, &d)
		t.Log(d)
	}
	rows.Close()
	for range 3 {
		t0 := time.Now()
		r, _ := db.Query(`SELECT state, COUNT(*) FROM devices GROUP BY state`)
		for r.Next() {
		}
		r.Close()
		t.Log(time.Since(t0))
	}
}
