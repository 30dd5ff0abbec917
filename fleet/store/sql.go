package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "modernc.org/sqlite"             // database/sql driver "sqlite"

	"github.com/edgeimg/edgeimg/fleet/api"
)

type dialect int

const (
	sqlite dialect = iota
	postgres
)

// SQL is the Store on a SQL database: SQLite or PostgreSQL.
type SQL struct {
	db      *sql.DB
	dialect dialect
	hb      *batcher
	// rolloutMu serializes rollout changes in this process (on SQLite, the only lock).
	rolloutMu sync.Mutex
}

var _ Store = (*SQL)(nil)

// Open opens (creating and migrating it if needed) the store at dbURL: a postgres:// or
// postgresql:// URL, or a SQLite file (a path, or sqlite://PATH).
//
// SQLite runs in WAL mode with synchronous=FULL: a transaction is acknowledged only after its
// WAL frames are fsynced, so nothing acknowledged is lost on kill -9 (which WAL with NORMAL
// would survive too: the frames are in the kernel's page cache) nor on a power cut or kernel
// crash (which NORMAL would not survive). Writers take the lock at BEGIN (IMMEDIATE) so that
// transactions never fail half-way on an upgrade from reader to writer.
func Open(ctx context.Context, dbURL string) (*SQL, error) {
	s := &SQL{}
	var err error
	switch {
	case strings.HasPrefix(dbURL, "postgres://"), strings.HasPrefix(dbURL, "postgresql://"):
		s.dialect = postgres
		s.db, err = sql.Open("pgx", dbURL)
		if err != nil {
			return nil, fmt.Errorf("opening postgres: %w", err)
		}
		s.db.SetMaxOpenConns(16)
		s.db.SetMaxIdleConns(16)
	default:
		path := strings.TrimPrefix(dbURL, "sqlite://")
		if path == "" {
			return nil, errors.New("no database path")
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("creating the database directory: %w", err)
		}
		q := url.Values{}
		q.Set("_busy_timeout", "10000")
		q.Set("_journal_mode", "WAL")
		q.Set("_synchronous", "FULL")
		q.Set("_txlock", "immediate")
		q.Set("_foreign_keys", "1")
		q.Add("_pragma", "cache_size(-65536)") // 64 MiB of pages: the devices and recent heartbeats of a large fleet
		s.db, err = sql.Open("sqlite", "file:"+path+"?"+q.Encode())
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", path, err)
		}
		// One connection: SQLite has one writer anyway, and Go's pool then queues writers
		// instead of SQLite sleeping them on a busy lock.
		s.db.SetMaxOpenConns(1)
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	writers := 1
	if s.dialect == postgres {
		writers = 4
	}
	if err := s.startBatcher(ctx, writers); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// Ping implements Store.
func (s *SQL) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Close writes the heartbeats already queued and closes the database.
func (s *SQL) Close() error {
	s.hb.close()
	return s.db.Close()
}

// q rewrites ? placeholders for PostgreSQL ($1, $2, …). The SQL of this package has no ? in
// literals.
func (s *SQL) q(query string) string {
	if s.dialect != postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// migrations are applied in order; each entry is one version. Types are the common subset:
// times are Unix nanoseconds, maps and structs JSON text.
func (s *SQL) migrations() [][]string {
	autoID := "INTEGER PRIMARY KEY AUTOINCREMENT"
	if s.dialect == postgres {
		autoID = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
	}
	return [][]string{{
		`CREATE TABLE tokens (
			id TEXT PRIMARY KEY,
			hash TEXT NOT NULL UNIQUE,
			created_at BIGINT NOT NULL,
			expires_at BIGINT NOT NULL,
			uses INTEGER NOT NULL,
			uses_left INTEGER NOT NULL CHECK (uses_left >= 0),
			labels TEXT NOT NULL,
			role TEXT NOT NULL)`,
		`CREATE TABLE devices (
			id TEXT PRIMARY KEY,
			hostname TEXT NOT NULL,
			labels TEXT NOT NULL,
			state TEXT NOT NULL,
			role TEXT NOT NULL,
			cert_serial TEXT NOT NULL,
			cert_not_after BIGINT NOT NULL,
			key_sha256 TEXT NOT NULL,
			token_id TEXT NOT NULL,
			enrolled_at BIGINT NOT NULL,
			last_seen BIGINT NOT NULL,
			version TEXT NOT NULL,
			slot TEXT NOT NULL,
			desired_version TEXT NOT NULL,
			hb_seq BIGINT NOT NULL,
			last_heartbeat TEXT NOT NULL)`,
		`CREATE INDEX devices_state ON devices (state)`,
		`CREATE TABLE heartbeats (
			device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
			ring INTEGER NOT NULL,
			seq BIGINT NOT NULL,
			at BIGINT NOT NULL,
			data TEXT NOT NULL,
			PRIMARY KEY (device_id, ring))`,
		`CREATE TABLE events (
			id ` + autoID + `,
			device_id TEXT NOT NULL,
			at BIGINT NOT NULL,
			kind TEXT NOT NULL,
			detail TEXT NOT NULL)`,
		`CREATE INDEX events_device ON events (device_id, id)`,
	}, {
		// OTA releases and rollouts (rollout.go).
		`ALTER TABLE devices ADD COLUMN update_version TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE devices ADD COLUMN update_state TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE devices ADD COLUMN update_reason TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE devices ADD COLUMN update_detail TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE devices ADD COLUMN update_at BIGINT NOT NULL DEFAULT 0`,
		`CREATE TABLE releases (
			version TEXT PRIMARY KEY,
			sha256 TEXT NOT NULL,
			pushed_at BIGINT NOT NULL,
			info TEXT NOT NULL)`,
		`CREATE TABLE rollouts (
			version TEXT PRIMARY KEY,
			selector TEXT NOT NULL,
			waves TEXT NOT NULL,
			max_failures DOUBLE PRECISION NOT NULL,
			state TEXT NOT NULL,
			reason TEXT NOT NULL,
			wave INTEGER NOT NULL,
			selected INTEGER NOT NULL,
			ack_failed INTEGER NOT NULL,
			created_at BIGINT NOT NULL,
			updated_at BIGINT NOT NULL)`,
		`CREATE INDEX rollouts_state ON rollouts (state)`,
		`CREATE TABLE rollout_devices (
			version TEXT NOT NULL REFERENCES rollouts (version) ON DELETE CASCADE,
			device_id TEXT NOT NULL,
			wave INTEGER NOT NULL,
			assigned_at BIGINT NOT NULL,
			PRIMARY KEY (version, device_id))`,
		`CREATE TABLE rollout_events (
			id ` + autoID + `,
			version TEXT NOT NULL,
			at BIGINT NOT NULL,
			kind TEXT NOT NULL,
			detail TEXT NOT NULL)`,
		`CREATE INDEX rollout_events_version ON rollout_events (version, id)`,
	}, {
		// Token revocation: 0 while the token is not revoked.
		`ALTER TABLE tokens ADD COLUMN revoked_at BIGINT NOT NULL DEFAULT 0`,
	}}
}

func (s *SQL) migrate(ctx context.Context) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if s.dialect == postgres {
			// Replicas starting together migrate one at a time.
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7305101)`); err != nil {
				return fmt.Errorf("locking for migrations: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER NOT NULL)`); err != nil {
			return fmt.Errorf("creating schema_migrations: %w", err)
		}
		var version int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&version); err != nil {
			return fmt.Errorf("reading the schema version: %w", err)
		}
		migs := s.migrations()
		if version > len(migs) {
			return fmt.Errorf("the database has schema version %d, newer than this edgeimg's %d", version, len(migs))
		}
		for i := version; i < len(migs); i++ {
			for _, stmt := range migs[i] {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %d: %w", i+1, err)
				}
			}
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO schema_migrations (version) VALUES (?)`), i+1); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		return nil
	})
}

// errRetry makes tx run the function again (a concurrent insert of the same row won).
var errRetry = errors.New("retry")

func (s *SQL) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	for attempt := 0; ; attempt++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("beginning a transaction: %w", err)
		}
		err = fn(tx)
		if err == nil {
			if err = tx.Commit(); err != nil {
				return fmt.Errorf("committing: %w", err)
			}
			return nil
		}
		_ = tx.Rollback()
		if !errors.Is(err, errRetry) || attempt >= 3 {
			return err
		}
	}
}

func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNS(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // maps of strings and plain structs always marshal
	}
	return string(b)
}

// insertCols are the device columns an enrollment writes; deviceCols those a device is read from.
const (
	insertCols = `id, hostname, labels, state, role, cert_serial, cert_not_after, key_sha256, token_id,
	enrolled_at, last_seen, version, slot, desired_version, last_heartbeat`
	deviceCols = insertCols + `,
	update_version, update_state, update_reason, update_detail, update_at`
)

type scanner interface{ Scan(dest ...any) error }

func scanDevice(r scanner) (api.Device, error) {
	var d api.Device
	var labels, role, hb string
	var notAfter, enrolled, seen, updAt int64
	var upd api.UpdateStatus
	err := r.Scan(&d.ID, &d.Hostname, &labels, &d.State, &role, &d.CertSerial, &notAfter, &d.KeySHA256, &d.TokenID,
		&enrolled, &seen, &d.Version, &d.Slot, &d.DesiredVer, &hb,
		&upd.Version, &upd.State, &upd.Reason, &upd.Detail, &updAt)
	if errors.Is(err, sql.ErrNoRows) {
		return d, ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("reading a device: %w", err)
	}
	d.CertNotAfter, d.EnrolledAt, d.LastSeen = fromNS(notAfter), fromNS(enrolled), fromNS(seen)
	if err := json.Unmarshal([]byte(labels), &d.Labels); err != nil {
		return d, fmt.Errorf("device %s: labels: %w", d.ID, err)
	}
	if err := json.Unmarshal([]byte(role), &d.Role); err != nil {
		return d, fmt.Errorf("device %s: role: %w", d.ID, err)
	}
	if hb != "" {
		d.LastHeartbeat = new(api.Heartbeat)
		if err := json.Unmarshal([]byte(hb), d.LastHeartbeat); err != nil {
			return d, fmt.Errorf("device %s: heartbeat: %w", d.ID, err)
		}
	}
	if upd.Version != "" {
		// The byte counts are the latest heartbeat's, when it is about the same update.
		if hu := d.LastHeartbeat; hu != nil && hu.Update != nil && hu.Update.Version == upd.Version {
			upd.Downloaded, upd.Reused, upd.Total = hu.Update.Downloaded, hu.Update.Reused, hu.Update.Total
		}
		d.Update, d.UpdateAt = &upd, fromNS(updAt)
	}
	return d, nil
}

func (s *SQL) event(ctx context.Context, tx *sql.Tx, id string, at time.Time, kind, detail string) error {
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO events (device_id, at, kind, detail) VALUES (?, ?, ?, ?)`), id, ns(at), kind, detail)
	if err != nil {
		return fmt.Errorf("recording event %s of %s: %w", kind, id, err)
	}
	return nil
}

// CreateToken implements Store.
func (s *SQL) CreateToken(ctx context.Context, t Token) error {
	if t.Role.Kind == "" {
		t.Role.Kind = api.RoleServer
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM tokens WHERE id = ? OR hash = ?`), t.ID, t.Hash).Scan(&n); err != nil {
			return fmt.Errorf("creating token %s: %w", t.ID, err)
		}
		if n > 0 {
			return fmt.Errorf("creating token %s: %w", t.ID, ErrTokenIDExists)
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO tokens (id, hash, created_at, expires_at, uses, uses_left, labels, role) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
			t.ID, t.Hash, ns(t.CreatedAt), ns(t.ExpiresAt), t.Uses, t.Uses, jsonText(nonNil(t.Labels)), jsonText(t.Role))
		if err != nil {
			return fmt.Errorf("creating token %s: %w", t.ID, err)
		}
		return nil
	})
}

// tokenCols are the columns a TokenInfo is read from (scanToken).
const tokenCols = `id, created_at, expires_at, uses, uses_left, labels, role, revoked_at`

func scanToken(r scanner) (api.TokenInfo, error) {
	var t api.TokenInfo
	var created, expires, revoked int64
	var labels, role string
	err := r.Scan(&t.ID, &created, &expires, &t.Uses, &t.UsesLeft, &labels, &role, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return t, ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("reading a token: %w", err)
	}
	t.CreatedAt, t.ExpiresAt, t.RevokedAt = fromNS(created), fromNS(expires), fromNS(revoked)
	if err := json.Unmarshal([]byte(labels), &t.Labels); err != nil {
		return t, fmt.Errorf("token %s: labels: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(role), &t.Role); err != nil {
		return t, fmt.Errorf("token %s: role: %w", t.ID, err)
	}
	return t, nil
}

// Tokens implements Store.
func (s *SQL) Tokens(ctx context.Context) ([]api.TokenInfo, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+tokenCols+` FROM tokens ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	defer rows.Close()
	var out []api.TokenInfo
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("listing tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeToken implements Store.
func (s *SQL) RevokeToken(ctx context.Context, id string, at time.Time) (api.TokenInfo, error) {
	var out api.TokenInfo
	err := s.tx(ctx, func(tx *sql.Tx) error {
		// Only a token not revoked yet gets the time: revoking again keeps the first.
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at = 0`), ns(at), id); err != nil {
			return fmt.Errorf("revoking token %s: %w", id, err)
		}
		t, err := scanToken(tx.QueryRowContext(ctx, s.q(`SELECT `+tokenCols+` FROM tokens WHERE id = ?`), id))
		if err != nil {
			return fmt.Errorf("token %s: %w", id, err)
		}
		out = t
		return nil
	})
	return out, err
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func (s *SQL) forUpdate() string {
	if s.dialect == postgres {
		return " FOR UPDATE"
	}
	return "" // the transaction holds SQLite's write lock from BEGIN IMMEDIATE
}

// Enroll implements Store.
func (s *SQL) Enroll(ctx context.Context, e Enrollment) (api.Device, error) {
	var out api.Device
	err := s.tx(ctx, func(tx *sql.Tx) error {
		dev, err := scanDevice(tx.QueryRowContext(ctx, s.q(`SELECT `+deviceCols+` FROM devices WHERE id = ?`+s.forUpdate()), e.DeviceID))
		found := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if found && dev.State == api.StateRevoked {
			return fmt.Errorf("device %s: %w", e.DeviceID, ErrRevoked)
		}
		var tok struct {
			id       string
			expires  int64
			revoked  int64
			usesLeft int
			labels   map[string]string
			role     api.Role
		}
		if !e.ByCert {
			var labels, role string
			err := tx.QueryRowContext(ctx, s.q(`SELECT id, expires_at, revoked_at, uses_left, labels, role FROM tokens WHERE hash = ?`+s.forUpdate()), e.TokenHash).
				Scan(&tok.id, &tok.expires, &tok.revoked, &tok.usesLeft, &labels, &role)
			if errors.Is(err, sql.ErrNoRows) {
				return ErrUnknownToken
			}
			if err != nil {
				return fmt.Errorf("reading the token: %w", err)
			}
			if tok.revoked != 0 {
				return fmt.Errorf("token %s was revoked at %s: %w", tok.id, fromNS(tok.revoked).Format(time.RFC3339), ErrRevokedToken)
			}
			if ns(e.At) >= tok.expires {
				return fmt.Errorf("token %s expired at %s: %w", tok.id, fromNS(tok.expires).Format(time.RFC3339), ErrExpiredToken)
			}
			if err := json.Unmarshal([]byte(labels), &tok.labels); err != nil {
				return fmt.Errorf("token %s: labels: %w", tok.id, err)
			}
			if err := json.Unmarshal([]byte(role), &tok.role); err != nil {
				return fmt.Errorf("token %s: role: %w", tok.id, err)
			}
		}
		useToken := func() error {
			res, err := tx.ExecContext(ctx, s.q(`UPDATE tokens SET uses_left = uses_left - 1 WHERE id = ? AND uses_left > 0`), tok.id)
			if err != nil {
				return fmt.Errorf("using token %s: %w", tok.id, err)
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				return fmt.Errorf("token %s: %w", tok.id, ErrUsedUpToken)
			}
			return nil
		}
		if !found {
			if e.ByCert {
				return fmt.Errorf("device %s: %w", e.DeviceID, ErrNotFound)
			}
			if err := useToken(); err != nil {
				return err
			}
			labels := maps.Clone(nonNil(e.Labels))
			maps.Copy(labels, tok.labels)
			role := tok.role
			if role.Kind == "" {
				role.Kind = api.RoleServer
			}
			res, err := tx.ExecContext(ctx, s.q(`INSERT INTO devices (`+insertCols+`, hb_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (id) DO NOTHING`),
				e.DeviceID, e.Hostname, jsonText(labels), api.StateActive, jsonText(role), e.CertSerial, ns(e.CertNotAfter), e.KeySHA256, tok.id,
				ns(e.At), ns(e.At), e.Version, e.Slot, "", "")
			if err != nil {
				return fmt.Errorf("storing device %s: %w", e.DeviceID, err)
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				return errRetry // enrolled concurrently: the next attempt sees it
			}
			if err := s.event(ctx, tx, e.DeviceID, e.At, "enrolled", fmt.Sprintf("token %s, hostname %q, role %s, certificate %s", tok.id, e.Hostname, role, e.CertSerial)); err != nil {
				return err
			}
		} else {
			kind := "re-enrolled"
			switch {
			case e.KeySHA256 == dev.KeySHA256 && e.ByCert:
				kind = "re-enrolled with its certificate"
			case e.KeySHA256 == dev.KeySHA256:
				kind = "enrolled again (same key)"
			case e.ByCert:
				return fmt.Errorf("device %s: re-enrollment with its certificate must keep its key: %w", e.DeviceID, ErrKeyMismatch)
			case dev.State == api.StateReset:
				if err := useToken(); err != nil {
					return err
				}
				kind = "re-enrolled with a new key after a reset"
			default:
				return fmt.Errorf("device %s: %w; order a reset (edgeimg fleet device reset %s) to let it enroll with a new one", e.DeviceID, ErrConflict, e.DeviceID)
			}
			hostname := e.Hostname
			if hostname == "" {
				hostname = dev.Hostname
			}
			_, err := tx.ExecContext(ctx, s.q(`UPDATE devices SET hostname = ?, state = ?, cert_serial = ?, cert_not_after = ?, key_sha256 = ?, last_seen = ?, version = ?, slot = ? WHERE id = ?`),
				hostname, api.StateActive, e.CertSerial, ns(e.CertNotAfter), e.KeySHA256, ns(e.At), e.Version, e.Slot, e.DeviceID)
			if err != nil {
				return fmt.Errorf("updating device %s: %w", e.DeviceID, err)
			}
			if err := s.event(ctx, tx, e.DeviceID, e.At, kind, "certificate "+e.CertSerial); err != nil {
				return err
			}
		}
		out, err = scanDevice(tx.QueryRowContext(ctx, s.q(`SELECT `+deviceCols+` FROM devices WHERE id = ?`), e.DeviceID))
		return err
	})
	return out, err
}

// Renew implements Store.
func (s *SQL) Renew(ctx context.Context, id, keySHA256, serial string, notAfter, at time.Time) (api.Device, error) {
	return s.update(ctx, id, at, "renewed", "certificate "+serial, func(tx *sql.Tx, d api.Device) error {
		if d.State == api.StateRevoked {
			return fmt.Errorf("device %s: %w", id, ErrRevoked)
		}
		if d.KeySHA256 != keySHA256 {
			return fmt.Errorf("device %s: %w", id, ErrKeyMismatch)
		}
		_, err := tx.ExecContext(ctx, s.q(`UPDATE devices SET cert_serial = ?, cert_not_after = ? WHERE id = ?`), serial, ns(notAfter), id)
		return err
	})
}

// update runs change on a locked device row, records an event and returns the device.
func (s *SQL) update(ctx context.Context, id string, at time.Time, kind, detail string, change func(*sql.Tx, api.Device) error) (api.Device, error) {
	var out api.Device
	err := s.tx(ctx, func(tx *sql.Tx) error {
		d, err := scanDevice(tx.QueryRowContext(ctx, s.q(`SELECT `+deviceCols+` FROM devices WHERE id = ?`+s.forUpdate()), id))
		if err != nil {
			return fmt.Errorf("device %s: %w", id, err)
		}
		if err := change(tx, d); err != nil {
			return err
		}
		if err := s.event(ctx, tx, id, at, kind, detail); err != nil {
			return err
		}
		out, err = scanDevice(tx.QueryRowContext(ctx, s.q(`SELECT `+deviceCols+` FROM devices WHERE id = ?`), id))
		return err
	})
	return out, err
}

// Device implements Store.
func (s *SQL) Device(ctx context.Context, id string) (api.Device, error) {
	return scanDevice(s.db.QueryRowContext(ctx, s.q(`SELECT `+deviceCols+` FROM devices WHERE id = ?`), id))
}

// Devices implements Store.
func (s *SQL) Devices(ctx context.Context, f DeviceFilter) ([]api.Device, error) {
	query, args := `SELECT `+deviceCols+` FROM devices`, []any{}
	if f.State != "" {
		query += ` WHERE state = ?`
		args = append(args, f.State)
	}
	rows, err := s.db.QueryContext(ctx, s.q(query+` ORDER BY id`), args...)
	if err != nil {
		return nil, fmt.Errorf("listing devices: %w", err)
	}
	defer rows.Close()
	var out []api.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		if matches(d.Labels, f.Labels) {
			out = append(out, d)
		}
	}
	return out, rows.Err()
}

func matches(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Heartbeat implements Store. Heartbeats are written by group commit (see batch.go).
func (s *SQL) Heartbeat(ctx context.Context, id, keySHA256 string, hb api.Heartbeat, at time.Time) (api.Desired, error) {
	return s.hb.do(ctx, id, keySHA256, hb, at)
}

// Heartbeats implements Store.
func (s *SQL) Heartbeats(ctx context.Context, id string, limit int) ([]api.HeartbeatRecord, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT at, data FROM heartbeats WHERE device_id = ? ORDER BY seq DESC LIMIT ?`), id, limit)
	if err != nil {
		return nil, fmt.Errorf("reading heartbeats of %s: %w", id, err)
	}
	defer rows.Close()
	out := []api.HeartbeatRecord{}
	for rows.Next() {
		var at int64
		var data string
		if err := rows.Scan(&at, &data); err != nil {
			return nil, fmt.Errorf("reading heartbeats of %s: %w", id, err)
		}
		r := api.HeartbeatRecord{At: fromNS(at)}
		if err := json.Unmarshal([]byte(data), &r.Heartbeat); err != nil {
			return nil, fmt.Errorf("reading heartbeats of %s: %w", id, err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Events implements Store.
func (s *SQL) Events(ctx context.Context, id string, limit int) ([]api.Event, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT at, kind, detail FROM events WHERE device_id = ? ORDER BY id DESC LIMIT ?`), id, limit)
	if err != nil {
		return nil, fmt.Errorf("reading events of %s: %w", id, err)
	}
	defer rows.Close()
	out := []api.Event{}
	for rows.Next() {
		e := api.Event{DeviceID: id}
		var at int64
		if err := rows.Scan(&at, &e.Kind, &e.Detail); err != nil {
			return nil, fmt.Errorf("reading events of %s: %w", id, err)
		}
		e.At = fromNS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Label implements Store.
func (s *SQL) Label(ctx context.Context, id string, set map[string]string, remove []string, at time.Time) (api.Device, error) {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(set)) {
		parts = append(parts, k+"="+set[k])
	}
	for _, k := range remove {
		parts = append(parts, k+"-")
	}
	return s.update(ctx, id, at, "labels", strings.Join(parts, " "), func(tx *sql.Tx, d api.Device) error {
		labels := nonNil(d.Labels)
		for _, k := range remove {
			delete(labels, k)
		}
		maps.Copy(labels, set)
		if err := api.ValidLabels(labels); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`UPDATE devices SET labels = ? WHERE id = ?`), jsonText(labels), id)
		return err
	})
}

func (s *SQL) setState(ctx context.Context, id, state string, at time.Time) (api.Device, error) {
	return s.update(ctx, id, at, state, "", func(tx *sql.Tx, d api.Device) error {
		if d.State == api.StateRevoked {
			return fmt.Errorf("device %s: %w", id, ErrRevoked)
		}
		_, err := tx.ExecContext(ctx, s.q(`UPDATE devices SET state = ? WHERE id = ?`), state, id)
		return err
	})
}

// Revoke implements Store.
func (s *SQL) Revoke(ctx context.Context, id string, at time.Time) (api.Device, error) {
	return s.setState(ctx, id, api.StateRevoked, at)
}

// RequestReset implements Store.
func (s *SQL) RequestReset(ctx context.Context, id string, at time.Time) (api.Device, error) {
	return s.setState(ctx, id, api.StateReset, at)
}

// SetRole implements Store.
func (s *SQL) SetRole(ctx context.Context, id string, role api.Role, at time.Time) (api.Device, error) {
	return s.update(ctx, id, at, "role", role.String(), func(tx *sql.Tx, d api.Device) error {
		_, err := tx.ExecContext(ctx, s.q(`UPDATE devices SET role = ? WHERE id = ?`), jsonText(role), id)
		return err
	})
}

// CountByState implements Store.
func (s *SQL) CountByState(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, COUNT(*) FROM devices GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("counting devices: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("counting devices: %w", err)
		}
		out[st] = n
	}
	return out, rows.Err()
}
