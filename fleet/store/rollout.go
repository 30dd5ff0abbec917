package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/edgeimg/edgeimg/fleet/api"
)

// Rollouts move the devices a selector picks to a release in waves. Starting one snapshots
// the selected active devices, orders them by sha256(version, NUL, device id) — stable, and
// different for every release so that the same devices are not always first — and gives
// each its wave: wave i covers the first ceil(N × Waves[i] / 100) devices. A targeted device
// is told the release (its desired_version).
//
// AdvanceRollouts looks at each running rollout: a targeted device has committed when it
// runs the release or reported "committed" for it, has failed when it reported "failed" or
// "refused" for it, and is pending otherwise (revoked devices are not counted). The rollout
// halts when
//
//	failed > floor(targeted × MaxFailures / 100)
//
// so a 2% limit halts a wave of 5 devices at its first failure and a wave of 100 at its
// third; failures already known when a halted rollout was resumed do not halt it again. It
// moves to the next wave when no targeted device is pending, and completes after the last.
// On PostgreSQL the step holds a transaction-scoped advisory lock: of several fleet
// replicas on one database, exactly one advances at a time and the others skip.

// Errors of rollouts.
var (
	ErrRolloutConflict = errors.New("rollout conflict")
	ErrReleaseConflict = errors.New("another release with this version is recorded")
)

// rolloutLockKey is the PostgreSQL advisory lock key of rollout changes: FNV-1a of
// "edgeimg-rollout".
var rolloutLockKey = func() int64 {
	h := fnv.New64a()
	h.Write([]byte("edgeimg-rollout"))
	return int64(binary.BigEndian.Uint64(h.Sum(nil)))
}()

// lockRollouts takes the rollout lock in tx: on PostgreSQL the advisory lock (waiting for
// it, or only trying when try is set: ok false means another replica holds it); on SQLite
// the process's mutex, which the caller releases.
func (s *SQL) lockRollouts(ctx context.Context, tx *sql.Tx, try bool) (bool, error) {
	if s.dialect != postgres {
		return true, nil // s.rolloutMu, held by the caller
	}
	if !try {
		_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, rolloutLockKey)
		return err == nil, err
	}
	var ok bool
	err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, rolloutLockKey).Scan(&ok)
	return ok, err
}

func updateDetail(u *api.UpdateStatus) string {
	d := "release " + u.Version
	if u.Reason != "" {
		d += ": " + u.Reason
	}
	if u.Detail != "" {
		d += ": " + u.Detail
	}
	return d
}

// PutRelease implements Store.
func (s *SQL) PutRelease(ctx context.Context, info api.ReleaseInfo) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var sum string
		err := tx.QueryRowContext(ctx, s.q(`SELECT sha256 FROM releases WHERE version = ?`), info.Version).Scan(&sum)
		switch {
		case err == nil && sum == info.SHA256:
			return nil
		case err == nil:
			return fmt.Errorf("release %s: %w (sha256 %s)", info.Version, ErrReleaseConflict, sum)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("recording release %s: %w", info.Version, err)
		}
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO releases (version, sha256, pushed_at, info) VALUES (?, ?, ?, ?)`),
			info.Version, info.SHA256, ns(info.PushedAt), jsonText(info))
		if err != nil {
			return fmt.Errorf("recording release %s: %w", info.Version, err)
		}
		return nil
	})
}

// Releases implements Store.
func (s *SQL) Releases(ctx context.Context) ([]api.ReleaseInfo, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT info FROM releases ORDER BY pushed_at DESC, version`)
	if err != nil {
		return nil, fmt.Errorf("listing releases: %w", err)
	}
	defer rows.Close()
	out := []api.ReleaseInfo{}
	for rows.Next() {
		var data string
		var r api.ReleaseInfo
		if err := rows.Scan(&data); err != nil {
			return nil, fmt.Errorf("listing releases: %w", err)
		}
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			return nil, fmt.Errorf("listing releases: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Release implements Store.
func (s *SQL) Release(ctx context.Context, version string) (api.ReleaseInfo, error) {
	var r api.ReleaseInfo
	var data string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT info FROM releases WHERE version = ?`), version).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("release %s: %w", version, ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("release %s: %w", version, err)
	}
	if err := json.Unmarshal([]byte(data), &r); err != nil {
		return r, fmt.Errorf("release %s: %w", version, err)
	}
	return r, nil
}

// rolloutTx runs fn in a transaction holding the rollout lock (waiting for it).
func (s *SQL) rolloutTx(ctx context.Context, fn func(*sql.Tx) error) error {
	s.rolloutMu.Lock()
	defer s.rolloutMu.Unlock()
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := s.lockRollouts(ctx, tx, false); err != nil {
			return fmt.Errorf("locking rollouts: %w", err)
		}
		return retryDeadlock(fn(tx))
	})
}

// retryDeadlock makes a PostgreSQL deadlock (a rollout's device updates against a batch of
// heartbeats, which lock the same rows in another order) run the transaction again.
func retryDeadlock(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") {
		return fmt.Errorf("%w: %w", errRetry, err)
	}
	return err
}

func rolloutOrder(version, id string) string {
	h := sha256.Sum256([]byte(version + "\x00" + id))
	return hex.EncodeToString(h[:])
}

// waveOf returns the wave of the device at position k of n.
func waveOf(k, n int, waves []float64) int {
	for i, w := range waves {
		if k < int(math.Ceil(float64(n)*w/100)) {
			return i
		}
	}
	return len(waves) - 1
}

// StartRollout implements Store.
func (s *SQL) StartRollout(ctx context.Context, version string, req api.RolloutRequest, at time.Time) (api.RolloutStatus, error) {
	var out api.RolloutStatus
	err := s.rolloutTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM releases WHERE version = ?`), version).Scan(&n); err != nil {
			return fmt.Errorf("starting the rollout of %s: %w", version, err)
		}
		if n == 0 {
			return fmt.Errorf("release %s: %w: push it first", version, ErrNotFound)
		}
		var other string
		err := tx.QueryRowContext(ctx, s.q(`SELECT version FROM rollouts WHERE state IN (?, ?, ?) ORDER BY created_at LIMIT 1`),
			api.RolloutRunning, api.RolloutPaused, api.RolloutHalted).Scan(&other)
		if err == nil {
			return fmt.Errorf("the rollout of release %s is not finished (abort it first): %w", other, ErrRolloutConflict)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("starting the rollout of %s: %w", version, err)
		}
		// A finished rollout of the same release is replaced.
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM rollout_devices WHERE version = ?`), version); err != nil {
			return fmt.Errorf("starting the rollout of %s: %w", version, err)
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM rollouts WHERE version = ?`), version); err != nil {
			return fmt.Errorf("starting the rollout of %s: %w", version, err)
		}
		rows, err := tx.QueryContext(ctx, s.q(`SELECT id, labels FROM devices WHERE state = ?`), api.StateActive)
		if err != nil {
			return fmt.Errorf("selecting devices: %w", err)
		}
		type cand struct{ id, order string }
		var sel []cand
		for rows.Next() {
			var id, labels string
			var l map[string]string
			if err := rows.Scan(&id, &labels); err != nil {
				rows.Close()
				return fmt.Errorf("selecting devices: %w", err)
			}
			if err := json.Unmarshal([]byte(labels), &l); err != nil {
				rows.Close()
				return fmt.Errorf("device %s: labels: %w", id, err)
			}
			if matches(l, req.Selector) {
				sel = append(sel, cand{id, rolloutOrder(version, id)})
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("selecting devices: %w", err)
		}
		slices.SortFunc(sel, func(a, b cand) int { return strings.Compare(a.order, b.order) })
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO rollouts (version, selector, waves, max_failures, state, reason, wave, selected, ack_failed, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, '', 0, ?, 0, ?, ?)`),
			version, jsonText(nonNil(req.Selector)), jsonText(req.Waves), req.MaxFailures, api.RolloutRunning, len(sel), ns(at), ns(at))
		if err != nil {
			return fmt.Errorf("starting the rollout of %s: %w", version, err)
		}
		for k, c := range sel {
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO rollout_devices (version, device_id, wave, assigned_at) VALUES (?, ?, ?, 0)`),
				version, c.id, waveOf(k, len(sel), req.Waves)); err != nil {
				return fmt.Errorf("starting the rollout of %s: %w", version, err)
			}
		}
		if err := s.rolloutEvent(ctx, tx, version, at, "started", fmt.Sprintf("%d devices selected, waves %v, max failures %g%%", len(sel), req.Waves, req.MaxFailures)); err != nil {
			return err
		}
		// Devices told another release they do not run (a failed update of an earlier
		// rollout) are told nothing any more: only this rollout's waves tell devices.
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE devices SET desired_version = '' WHERE desired_version <> '' AND desired_version <> version`)); err != nil {
			return fmt.Errorf("starting the rollout of %s: %w", version, err)
		}
		if err := s.targetWave(ctx, tx, version, 0, at); err != nil {
			return err
		}
		out, err = s.rolloutStatus(ctx, tx, version)
		return err
	})
	return out, err
}

// targetWave tells the devices of wave the release.
func (s *SQL) targetWave(ctx context.Context, tx *sql.Tx, version string, wave int, at time.Time) error {
	rows, err := tx.QueryContext(ctx, s.q(`SELECT device_id FROM rollout_devices WHERE version = ? AND wave = ? ORDER BY device_id`), version, wave)
	if err != nil {
		return fmt.Errorf("targeting wave %d of %s: %w", wave, version, err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("targeting wave %d of %s: %w", wave, version, err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("targeting wave %d of %s: %w", wave, version, err)
	}
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE devices SET desired_version = ? WHERE id = ?`), version, id); err != nil {
			return fmt.Errorf("targeting device %s: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE rollout_devices SET assigned_at = ? WHERE version = ? AND device_id = ?`), ns(at), version, id); err != nil {
			return fmt.Errorf("targeting device %s: %w", id, err)
		}
		if err := s.event(ctx, tx, id, at, "update-target", fmt.Sprintf("release %s (rollout wave %d)", version, wave+1)); err != nil {
			return err
		}
	}
	return s.rolloutEvent(ctx, tx, version, at, "wave", fmt.Sprintf("wave %d: %d devices told to update", wave+1, len(ids)))
}

func (s *SQL) rolloutEvent(ctx context.Context, tx *sql.Tx, version string, at time.Time, kind, detail string) error {
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO rollout_events (version, at, kind, detail) VALUES (?, ?, ?, ?)`), version, ns(at), kind, detail)
	if err != nil {
		return fmt.Errorf("recording rollout event %s of %s: %w", kind, version, err)
	}
	return nil
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// rolloutStatus reads a rollout and counts its devices.
func (s *SQL) rolloutStatus(ctx context.Context, q queryer, version string) (api.RolloutStatus, error) {
	st, _, err := s.rolloutStatusAck(ctx, q, version)
	return st, err
}

func (s *SQL) rolloutStatusAck(ctx context.Context, q queryer, version string) (api.RolloutStatus, int, error) {
	r := api.RolloutStatus{Version: version}
	var selector, waves string
	var created, updated int64
	var ack int
	err := q.QueryRowContext(ctx, s.q(`SELECT selector, waves, max_failures, state, reason, wave, selected, ack_failed, created_at, updated_at FROM rollouts WHERE version = ?`), version).
		Scan(&selector, &waves, &r.MaxFailures, &r.State, &r.Reason, &r.Wave, &r.Selected, &ack, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return r, 0, fmt.Errorf("rollout of %s: %w", version, ErrNotFound)
	}
	if err != nil {
		return r, 0, fmt.Errorf("rollout of %s: %w", version, err)
	}
	r.CreatedAt, r.UpdatedAt = fromNS(created), fromNS(updated)
	if err := json.Unmarshal([]byte(selector), &r.Selector); err != nil {
		return r, 0, fmt.Errorf("rollout of %s: selector: %w", version, err)
	}
	if len(r.Selector) == 0 {
		r.Selector = nil
	}
	if err := json.Unmarshal([]byte(waves), &r.Waves); err != nil {
		return r, 0, fmt.Errorf("rollout of %s: waves: %w", version, err)
	}
	rows, err := q.QueryContext(ctx, s.q(`SELECT d.id, d.version, d.update_version, d.update_state, d.update_reason, d.update_detail
		FROM rollout_devices rd JOIN devices d ON d.id = rd.device_id
		WHERE rd.version = ? AND rd.wave <= ? AND d.state <> ? ORDER BY d.id`), version, r.Wave, api.StateRevoked)
	if err != nil {
		return r, 0, fmt.Errorf("rollout of %s: devices: %w", version, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, running string
		var u api.UpdateStatus
		if err := rows.Scan(&id, &running, &u.Version, &u.State, &u.Reason, &u.Detail); err != nil {
			return r, 0, fmt.Errorf("rollout of %s: devices: %w", version, err)
		}
		r.Targeted++
		switch {
		case running == version || u.Version == version && u.State == api.UpdateCommitted:
			r.Committed++
		case u.Version == version && (u.State == api.UpdateFailed || u.State == api.UpdateRefused):
			r.Failed++
			if len(r.Failures) < 100 {
				r.Failures = append(r.Failures, api.RolloutFailure{DeviceID: id, State: u.State, Reason: u.Reason, Detail: u.Detail})
			}
		default:
			r.Pending++
		}
	}
	return r, ack, rows.Err()
}

// Rollout implements Store.
func (s *SQL) Rollout(ctx context.Context, version string) (api.RolloutStatus, error) {
	return s.rolloutStatus(ctx, s.db, version)
}

// Rollouts implements Store.
func (s *SQL) Rollouts(ctx context.Context) ([]api.RolloutStatus, error) {
	versions, err := s.rolloutVersions(ctx, s.db, "")
	if err != nil {
		return nil, err
	}
	out := []api.RolloutStatus{}
	for _, v := range versions {
		st, err := s.rolloutStatus(ctx, s.db, v)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

func (s *SQL) rolloutVersions(ctx context.Context, q queryer, state string) ([]string, error) {
	query, args := `SELECT version FROM rollouts`, []any{}
	if state != "" {
		query, args = query+` WHERE state = ?`, append(args, state)
	}
	rows, err := q.QueryContext(ctx, s.q(query+` ORDER BY created_at DESC, version`), args...)
	if err != nil {
		return nil, fmt.Errorf("listing rollouts: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("listing rollouts: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// RolloutEvents implements Store.
func (s *SQL) RolloutEvents(ctx context.Context, version string, limit int) ([]api.Event, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT at, kind, detail FROM rollout_events WHERE version = ? ORDER BY id DESC LIMIT ?`), version, limit)
	if err != nil {
		return nil, fmt.Errorf("reading rollout events of %s: %w", version, err)
	}
	defer rows.Close()
	out := []api.Event{}
	for rows.Next() {
		var e api.Event
		var at int64
		if err := rows.Scan(&at, &e.Kind, &e.Detail); err != nil {
			return nil, fmt.Errorf("reading rollout events of %s: %w", version, err)
		}
		e.At = fromNS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// setRollout moves a rollout from state from to state to (conditionally: a concurrent
// change makes it fail with ErrRolloutConflict).
func (s *SQL) setRollout(ctx context.Context, tx *sql.Tx, r api.RolloutStatus, state, reason string, wave, ack int, at time.Time) error {
	res, err := tx.ExecContext(ctx, s.q(`UPDATE rollouts SET state = ?, reason = ?, wave = ?, ack_failed = ?, updated_at = ? WHERE version = ? AND state = ? AND wave = ?`),
		state, reason, wave, ack, ns(at), r.Version, r.State, r.Wave)
	if err != nil {
		return fmt.Errorf("rollout of %s: %w", r.Version, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("rollout of %s changed meanwhile: %w", r.Version, ErrRolloutConflict)
	}
	return nil
}

// RolloutAction implements Store.
func (s *SQL) RolloutAction(ctx context.Context, version, action string, at time.Time) (api.RolloutStatus, error) {
	var out api.RolloutStatus
	err := s.rolloutTx(ctx, func(tx *sql.Tx) error {
		r, ack, err := s.rolloutStatusAck(ctx, tx, version)
		if err != nil {
			return err
		}
		bad := func() error {
			return fmt.Errorf("rollout of %s is %s, it cannot %s: %w", version, r.State, action, ErrRolloutConflict)
		}
		switch action {
		case "pause":
			if r.State != api.RolloutRunning {
				return bad()
			}
			err = s.setRollout(ctx, tx, r, api.RolloutPaused, "", r.Wave, ack, at)
		case "resume":
			switch r.State {
			case api.RolloutPaused:
				err = s.setRollout(ctx, tx, r, api.RolloutRunning, "", r.Wave, ack, at)
			case api.RolloutHalted:
				// The failures known now do not halt the rollout again; new ones do.
				err = s.setRollout(ctx, tx, r, api.RolloutRunning, "", r.Wave, r.Failed, at)
			default:
				return bad()
			}
		case "abort":
			if r.State != api.RolloutRunning && r.State != api.RolloutPaused && r.State != api.RolloutHalted {
				return bad()
			}
			if err := s.setRollout(ctx, tx, r, api.RolloutAborted, "", r.Wave, ack, at); err != nil {
				return err
			}
			// Devices not running the release are no longer told to update.
			_, err = tx.ExecContext(ctx, s.q(`UPDATE devices SET desired_version = '' WHERE desired_version = ? AND version <> ?
				AND id IN (SELECT device_id FROM rollout_devices WHERE version = ?)`), version, version, version)
		default:
			return fmt.Errorf("rollout action %q: want pause, resume or abort", action)
		}
		if err != nil {
			return err
		}
		if err := s.rolloutEvent(ctx, tx, version, at, action, ""); err != nil {
			return err
		}
		out, err = s.rolloutStatus(ctx, tx, version)
		return err
	})
	return out, err
}

// AdvanceRollouts implements Store.
func (s *SQL) AdvanceRollouts(ctx context.Context, at time.Time) (int, error) {
	if !s.rolloutMu.TryLock() {
		return 0, nil // this process is advancing already
	}
	defer s.rolloutMu.Unlock()
	steps := 0
	err := s.tx(ctx, func(tx *sql.Tx) error {
		steps = 0
		ok, err := s.lockRollouts(ctx, tx, true)
		if err != nil {
			return fmt.Errorf("locking rollouts: %w", err)
		}
		if !ok {
			return nil // another replica advances
		}
		versions, err := s.rolloutVersions(ctx, tx, api.RolloutRunning)
		if err != nil {
			return err
		}
		return retryDeadlock(s.advance(ctx, tx, versions, at, &steps))
	})
	return steps, err
}

// advance takes one step of each running rollout of versions in tx.
func (s *SQL) advance(ctx context.Context, tx *sql.Tx, versions []string, at time.Time, steps *int) error {
	for _, v := range versions {
		r, ack, err := s.rolloutStatusAck(ctx, tx, v)
		if err != nil {
			return err
		}
		limit := int(math.Floor(float64(r.Targeted) * r.MaxFailures / 100))
		switch {
		case r.Failed > limit && r.Failed > ack:
			reason := fmt.Sprintf("%d of %d targeted devices failed, above the limit of %d (max failures %g%%)", r.Failed, r.Targeted, limit, r.MaxFailures)
			if err := s.setRollout(ctx, tx, r, api.RolloutHalted, reason, r.Wave, ack, at); err != nil {
				return err
			}
			if err := s.rolloutEvent(ctx, tx, v, at, "halted", reason); err != nil {
				return err
			}
		case r.Pending > 0:
			continue
		case r.Wave == len(r.Waves)-1:
			if err := s.setRollout(ctx, tx, r, api.RolloutCompleted, "", r.Wave, ack, at); err != nil {
				return err
			}
			detail := fmt.Sprintf("%d committed, %d failed", r.Committed, r.Failed)
			if err := s.rolloutEvent(ctx, tx, v, at, "completed", detail); err != nil {
				return err
			}
		default:
			if err := s.setRollout(ctx, tx, r, api.RolloutRunning, "", r.Wave+1, ack, at); err != nil {
				return err
			}
			if err := s.targetWave(ctx, tx, v, r.Wave+1, at); err != nil {
				return err
			}
		}
		*steps++
	}
	return nil
}
