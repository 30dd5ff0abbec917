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
	"sync/atomic"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
)

// Heartbeats are written by group commit: the handlers queue them, a gatherer takes what is
// queued, up to maxBatch, and hands it to a writer (one on SQLite, which has one writer
// anyway; a few on PostgreSQL), which writes it in one transaction and answers every
// heartbeat of the batch only after the commit: one fsync for many heartbeats, and nothing
// acknowledged that is not durable. While a batch commits the next one gathers, so batches
// grow with the load and stay at one heartbeat when it is light.
//
// A commit alone is fast (the fsync of a few WAL pages), so under load the next batch would
// hold only the two or three heartbeats that came in meanwhile: at 5,000 heartbeats/s on
// SQLite, 2,000 commits/s, whose WAL writes and fsyncs took half the server's CPU. So under
// load the gatherer starts at most one batch per minCommitGap (a heartbeat that comes after
// a quiet spell is written at once): at 5,000/s, ~20 heartbeats per commit. Latency grows by
// less than the gap; the cost per heartbeat falls with the batch size.

// maxBatch is the most heartbeats written in one transaction.
const maxBatch = 512

// minCommitGap is the least time between the starts of two batches under load.
const minCommitGap = 4 * time.Millisecond

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

// hbRow is what a heartbeat returns of its device row, decoded by the heartbeat's own
// goroutine rather than by the writer.
type hbRow struct {
	state, role, desired string
}

func (r *hbRow) desiredState(id string) (api.Desired, error) {
	d := api.Desired{Version: r.desired, Reset: r.state == api.StateReset}
	if err := json.Unmarshal([]byte(r.role), &d.Role); err != nil {
		return d, fmt.Errorf("device %s: role: %w", id, err)
	}
	return d, nil
}

type batcher struct {
	s      *SQL
	upd    *sql.Stmt // the device row, RETURNING it
	ring   *sql.Stmt // the ring of recent heartbeats (SQLite; on PostgreSQL upd writes it)
	sel    *sql.Stmt // a device, to say why a heartbeat was refused
	upst   *sql.Stmt // the device's update status, when it changed
	reqs   chan *hbReq
	quit   chan struct{}
	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup
	// batches and batched count the transactions written and the heartbeats in them.
	batches, batched atomic.Uint64
	// inflight counts the heartbeats queued or being written.
	inflight atomic.Int64
	// gap is minCommitGap (tests and benchmarks change it).
	gap time.Duration
}

// BatchStats are the group commit's counters since the store was opened.
type BatchStats struct {
	// Batches is how many batches (transactions) were written, Heartbeats how many
	// heartbeats they held: Heartbeats/Batches is the mean batch size.
	Batches, Heartbeats uint64
}

// BatchStats returns the group commit's counters.
func (s *SQL) BatchStats() BatchStats {
	return BatchStats{Batches: s.hb.batches.Load(), Heartbeats: s.hb.batched.Load()}
}

// hbCols are the device columns a heartbeat returns: what the device is told.
const hbCols = `state, role, desired_version`

func (s *SQL) startBatcher(ctx context.Context, writers int) error {
	b := &batcher{s: s, reqs: make(chan *hbReq, 4*maxBatch), quit: make(chan struct{}), gap: minCommitGap}
	var err error
	const update = `UPDATE devices SET last_seen = ?, version = ?, slot = ?, last_heartbeat = ?, hb_seq = hb_seq + 1
		WHERE id = ? AND state <> ? AND key_sha256 = ? RETURNING hb_seq, ` + hbCols
	const upsert = ` ON CONFLICT (device_id, ring) DO UPDATE SET seq = excluded.seq, at = excluded.at, data = excluded.data`
	if s.dialect == postgres {
		// One statement, one round trip per heartbeat: the device row and its ring entry.
		b.upd, err = s.db.PrepareContext(ctx, fmt.Sprintf(`WITH u AS (%s),
			r AS (INSERT INTO heartbeats (device_id, ring, seq, at, data) SELECT $5, hb_seq %% %d, hb_seq, $1, $4 FROM u`+upsert+`)
			SELECT hb_seq, %s FROM u`, s.q(update), HeartbeatHistory, hbCols))
	} else {
		b.upd, err = s.db.PrepareContext(ctx, update)
		if err == nil {
			b.ring, err = s.db.PrepareContext(ctx, `INSERT INTO heartbeats (device_id, ring, seq, at, data) VALUES (?, ?, ?, ?, ?)`+upsert)
		}
	}
	if err != nil {
		return fmt.Errorf("preparing the heartbeat statements: %w", err)
	}
	if b.sel, err = s.db.PrepareContext(ctx, s.q(`SELECT state FROM devices WHERE id = ?`)); err != nil {
		return fmt.Errorf("preparing the heartbeat statements: %w", err)
	}
	if b.upst, err = s.db.PrepareContext(ctx, s.q(`UPDATE devices SET update_version = ?, update_state = ?, update_reason = ?, update_detail = ?, update_at = ?
		WHERE id = ? AND NOT (update_version = ? AND update_state = ? AND update_reason = ?)`)); err != nil {
		return fmt.Errorf("preparing the heartbeat statements: %w", err)
	}
	batches := make(chan []*hbReq)
	b.wg.Go(func() { b.gather(batches) })
	for range writers {
		b.wg.Go(func() { b.writer(batches) })
	}
	s.hb = b
	return nil
}

// do queues a heartbeat and waits for its batch's commit. A heartbeat whose context ends
// before its batch starts is not written.
func (b *batcher) do(ctx context.Context, id, key string, hb api.Heartbeat, at time.Time) (api.Desired, error) {
	r := &hbReq{ctx: ctx, id: id, key: key, hb: hb, data: jsonText(hb), at: at, done: make(chan hbRes, 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return api.Desired{}, errClosed
	}
	b.inflight.Add(1)
	defer b.inflight.Add(-1)
	select {
	case b.reqs <- r:
	case <-ctx.Done():
		b.mu.RUnlock()
		return api.Desired{}, ctx.Err()
	}
	b.mu.RUnlock()
	res := <-r.done
	if res.err != nil {
		return api.Desired{}, res.err
	}
	return res.row.desiredState(id)
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

// gather forms the batches: it takes what is queued, up to maxBatch, and hands it to a
// writer. Under load (the last batch held more than one heartbeat, or others are queued or
// being written) it starts a batch at most once per minCommitGap; after a quiet spell, at
// once.
func (b *batcher) gather(batches chan<- []*hbReq) {
	defer close(batches)
	var last time.Time // when the last batch started
	busy := false      // the last batch had more than one heartbeat
	pace := time.NewTimer(0)
	defer pace.Stop()
	for {
		var batch []*hbReq
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
		case <-b.quit:
			// No more senders (closed is set): write what is left.
			for {
				batch = b.take(nil)
				if len(batch) == 0 {
					return
				}
				batches <- batch
			}
		}
		if wait := b.gap - time.Since(last); wait > 0 && (busy || b.inflight.Load() > 1) && len(b.reqs) < maxBatch-1 {
			pace.Reset(wait)
			select {
			case <-pace.C:
			case <-b.quit:
			}
		}
		last = time.Now()
		batch = b.take(batch)
		busy = len(batch) > 1
		batches <- batch
	}
}

// take adds what is queued to batch, up to maxBatch, without waiting.
func (b *batcher) take(batch []*hbReq) []*hbReq {
	for len(batch) < maxBatch {
		select {
		case r := <-b.reqs:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// writer writes the batches it is handed.
func (b *batcher) writer(batches <-chan []*hbReq) {
	for batch := range batches {
		// Counted before the answers: a heartbeat answered is in the counters.
		b.batches.Add(1)
		b.batched.Add(uint64(len(batch)))
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
	err := tx.StmtContext(ctx, b.upd).QueryRowContext(ctx, ns(r.at), r.hb.Version, r.hb.Slot, r.data, r.id, api.StateRevoked, r.key).
		Scan(&seq, &row.state, &row.role, &row.desired)
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
	if b.ring != nil { // else the update statement wrote it
		if _, err := tx.StmtContext(ctx, b.ring).ExecContext(ctx, r.id, seq%HeartbeatHistory, seq, ns(r.at), r.data); err != nil {
			return row, fmt.Errorf("recording a heartbeat of %s: %w", r.id, err)
		}
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
