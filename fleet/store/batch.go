package store

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
)

// Heartbeats are written by group commit: the handlers queue them, and writer goroutines
// (one on SQLite, which has one writer anyway; a few on PostgreSQL) each take what is
// queued, up to maxBatch, write it in one transaction and answer every heartbeat of the
// batch only after the commit: one fsync for many heartbeats, and nothing acknowledged
// that is not durable. While a batch commits the next one gathers, so batches grow with the
// load and stay at one heartbeat when it is light.

// maxBatch is the most heartbeats written in one transaction.
const maxBatch = 512

var errClosed = errors.New("store closed")

type hbReq struct {
	ctx  context.Context
	id   string
	key  string
	hb   api.Heartbeat
	data string // hb as JSON
	at   time.Time
	done chan hbRes
}

type hbRes struct {
	row hbRow
	err error
}

// hbRow is the device row a heartbeat returns, decoded by the heartbeat's own goroutine
// rather than by the writer.
type hbRow struct {
	d                        api.Device
	labels, role             string
	notAfter, enrolled, seen int64
}

func (r *hbRow) device(hb api.Heartbeat) (api.Device, error) {
	d := r.d
	d.CertNotAfter, d.EnrolledAt, d.LastSeen = fromNS(r.notAfter), fromNS(r.enrolled), fromNS(r.seen)
	if err := json.Unmarshal([]byte(r.labels), &d.Labels); err != nil {
		return d, fmt.Errorf("device %s: labels: %w", d.ID, err)
	}
	if err := json.Unmarshal([]byte(r.role), &d.Role); err != nil {
		return d, fmt.Errorf("device %s: role: %w", d.ID, err)
	}
	d.LastHeartbeat = &hb
	return d, nil
}

type batcher struct {
	s      *SQL
	upd    *sql.Stmt // the device row, RETURNING it
	ring   *sql.Stmt // the ring of recent heartbeats
	sel    *sql.Stmt // a device, to say why a heartbeat was refused
	upst   *sql.Stmt // the device's update status, when it changed
	reqs   chan *hbReq
	quit   chan struct{}
	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup
}

// hbCols are the device columns a heartbeat returns: all but last_heartbeat, which is the
// heartbeat itself.
const hbCols = `id, hostname, labels, state, role, cert_serial, cert_not_after, key_sha256, token_id,
	enrolled_at, last_seen, version, slot, desired_version`

func (s *SQL) startBatcher(ctx context.Context, writers int) error {
	b := &batcher{s: s, reqs: make(chan *hbReq, 4*maxBatch), quit: make(chan struct{})}
	var err error
	if b.upd, err = s.db.PrepareContext(ctx, s.q(`UPDATE devices SET last_seen = ?, version = ?, slot = ?, last_heartbeat = ?, hb_seq = hb_seq + 1
		WHERE id = ? AND state <> ? AND key_sha256 = ? RETURNING hb_seq, `+hbCols)); err != nil {
		return fmt.Errorf("preparing the heartbeat statements: %w", err)
	}
	if b.ring, err = s.db.PrepareContext(ctx, s.q(`INSERT INTO heartbeats (device_id, ring, seq, at, data) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (device_id, ring) DO UPDATE SET seq = excluded.seq, at = excluded.at, data = excluded.data`)); err != nil {
		return fmt.Errorf("preparing the heartbeat statements: %w", err)
	}
	if b.sel, err = s.db.PrepareContext(ctx, s.q(`SELECT state FROM devices WHERE id = ?`)); err != nil {
		return fmt.Errorf("preparing the heartbeat statements: %w", err)
	}
	if b.upst, err = s.db.PrepareContext(ctx, s.q(`UPDATE devices SET update_version = ?, update_state = ?, update_reason = ?, update_detail = ?, update_at = ?
		WHERE id = ? AND NOT (update_version = ? AND update_state = ? AND update_reason = ?)`)); err != nil {
		return fmt.Errorf("preparing the heartbeat statements: %w", err)
	}
	for range writers {
		b.wg.Go(b.run)
	}
	s.hb = b
	return nil
}

// do queues a heartbeat and waits for its batch's commit. A heartbeat whose context ends
// before its batch starts is not written.
func (b *batcher) do(ctx context.Context, id, key string, hb api.Heartbeat, at time.Time) (api.Device, error) {
	r := &hbReq{ctx: ctx, id: id, key: key, hb: hb, data: jsonText(hb), at: at, done: make(chan hbRes, 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return api.Device{}, errClosed
	}
	select {
	case b.reqs <- r:
	case <-ctx.Done():
		b.mu.RUnlock()
		return api.Device{}, ctx.Err()
	}
	b.mu.RUnlock()
	res := <-r.done
	if res.err != nil {
		return api.Device{}, res.err
	}
	return res.row.device(hb)
}

// close stops the writers after the heartbeats already queued are written.
func (b *batcher) close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	close(b.quit)
	b.wg.Wait()
}

func (b *batcher) run() {
	for {
		var batch []*hbReq
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
		case <-b.quit:
			// No more senders (closed is set): write what is left.
			for {
				select {
				case r := <-b.reqs:
					b.write([]*hbReq{r})
				default:
					return
				}
			}
		}
	gather:
		for len(batch) < maxBatch {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		b.write(batch)
	}
}

// refused reports whether err is a heartbeat refused for its device (nothing was written).
func refused(err error) bool {
	return errors.Is(err, ErrRevoked) || errors.Is(err, ErrKeyMismatch) || errors.Is(err, ErrNotFound)
}

// write writes a batch in one transaction. If the transaction fails, each heartbeat is
// written again in its own, so that one bad heartbeat fails only itself.
func (b *batcher) write(batch []*hbReq) {
	live := batch[:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- hbRes{err: err}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	// Rows locked in one order: concurrent batches (PostgreSQL) cannot deadlock.
	slices.SortStableFunc(live, func(x, y *hbReq) int { return cmp.Compare(x.id, y.id) })
	res := make([]hbRes, len(live))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := b.s.tx(ctx, func(tx *sql.Tx) error {
		for i, r := range live {
			row, err := b.heartbeatIn(ctx, tx, r)
			if err != nil && !refused(err) {
				return err
			}
			res[i] = hbRes{row: row, err: err}
		}
		return nil
	})
	if err != nil && len(live) > 1 {
		for _, r := range live {
			var row hbRow
			err := b.s.tx(r.ctx, func(tx *sql.Tx) error {
				var err error
				row, err = b.heartbeatIn(r.ctx, tx, r)
				return err
			})
			r.done <- hbRes{row: row, err: err}
		}
		return
	}
	for i, r := range live {
		if err != nil {
			res[i] = hbRes{err: err}
		}
		r.done <- res[i]
	}
}

// heartbeatIn records a heartbeat in tx: the device row (its latest heartbeat) and the ring
// of recent ones.
func (b *batcher) heartbeatIn(ctx context.Context, tx *sql.Tx, r *hbReq) (hbRow, error) {
	var row hbRow
	var seq int64
	d := &row.d
	err := tx.StmtContext(ctx, b.upd).QueryRowContext(ctx, ns(r.at), r.hb.Version, r.hb.Slot, r.data, r.id, api.StateRevoked, r.key).
		Scan(&seq, &d.ID, &d.Hostname, &row.labels, &d.State, &row.role, &d.CertSerial, &row.notAfter, &d.KeySHA256, &d.TokenID,
			&row.enrolled, &row.seen, &d.Version, &d.Slot, &d.DesiredVer)
	if errors.Is(err, sql.ErrNoRows) {
		var state string
		err := tx.StmtContext(ctx, b.sel).QueryRowContext(ctx, r.id).Scan(&state)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return row, fmt.Errorf("device %s: %w", r.id, ErrNotFound)
		case err != nil:
			return row, fmt.Errorf("device %s: %w", r.id, err)
		case state == api.StateRevoked:
			return row, fmt.Errorf("device %s: %w", r.id, ErrRevoked)
		default:
			return row, fmt.Errorf("device %s: %w", r.id, ErrKeyMismatch)
		}
	}
	if err != nil {
		return row, fmt.Errorf("recording a heartbeat of %s: %w", r.id, err)
	}
	if _, err := tx.StmtContext(ctx, b.ring).ExecContext(ctx, r.id, seq%HeartbeatHistory, seq, ns(r.at), r.data); err != nil {
		return row, fmt.Errorf("recording a heartbeat of %s: %w", r.id, err)
	}
	if u := r.hb.Update; u != nil {
		// Only heartbeats that carry an update status pay for this statement, and only a
		// change of state writes the row and an event.
		res, err := tx.StmtContext(ctx, b.upst).ExecContext(ctx, u.Version, u.State, u.Reason, u.Detail, ns(r.at), r.id, u.Version, u.State, u.Reason)
		if err != nil {
			return row, fmt.Errorf("recording the update status of %s: %w", r.id, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return row, fmt.Errorf("recording the update status of %s: %w", r.id, err)
		} else if n == 1 {
			if err := b.s.event(ctx, tx, r.id, r.at, "update-"+u.State, updateDetail(u)); err != nil {
				return row, err
			}
		}
	}
	return row, nil
}
