package ota

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/edgeimg/edgeimg/hw"
	"github.com/edgeimg/edgeimg/ota/apply"
	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/delta"
)

// stream returns the release's bundle stream: made by delta.Stream from the chunks the card
// already holds (the active slot, and what an interrupted install left in the inactive one)
// and the ones fetched, when the fleet serves the parts' indexes; else the whole bundle.
func (u *Updater) stream(ctx context.Context, src Source, version string, m *bundle.Manifest, mb, sb []byte, active, inactive hw.Slot) (io.ReadCloser, error) {
	if !u.cfg.NoDelta {
		r, err := u.deltaStream(ctx, src, version, m, mb, sb, active, inactive)
		if err == nil {
			return r, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, delta.ErrNotFound) {
			u.cfg.Log.Warn("delta download not possible: downloading the whole bundle", "version", version, "err", err)
		}
	}
	return &countingCloser{ReadCloser: src.Bundle(ctx, version), u: u}, nil
}

// countingCloser counts a full bundle download.
type countingCloser struct {
	io.ReadCloser
	u *Updater
}

func (c *countingCloser) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.u.downloaded.Add(int64(n))
	return n, err
}

func (u *Updater) deltaStream(ctx context.Context, src Source, version string, m *bundle.Manifest, mb, sb []byte, active, inactive hw.Slot) (io.ReadCloser, error) {
	idx := map[string]*delta.Index{}
	for _, p := range m.Parts {
		b, err := src.Index(ctx, version, p.Name)
		if err != nil {
			return nil, err
		}
		ix, err := delta.ParseIndex(b, p.Name, p.Size, p.SHA256)
		if err != nil {
			return nil, err
		}
		idx[p.Name] = ix
	}
	have, err := u.scanActive(ctx, active)
	if err != nil {
		return nil, err
	}
	var closers []io.Closer
	closeAll := func() {
		for _, c := range closers {
			c.Close()
		}
	}
	inPlace := map[string]io.ReaderAt{}
	for _, p := range m.Parts {
		n := partitionOf(inactive, p.Name)
		pp, err := u.cfg.Card.Partition(n)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("slot %s partition %d: %w", inactive.Name, n, err)
		}
		closers = append(closers, pp)
		inPlace[p.Name] = readOnly{pp}
	}
	r, stats, err := delta.Stream(ctx, mb, sb, m, idx, have, inPlace, src)
	if err != nil {
		closeAll()
		return nil, err
	}
	return &deltaReader{r: r, stats: stats, u: u, closeAll: closeAll}, nil
}

// scanActive returns the chunks of the active slot's boot and system partitions. The scan
// (reading both partitions whole) is made once and kept, with the partitions open for
// reading, for the updater's lifetime: the active slot does not change while it runs.
func (u *Updater) scanActive(ctx context.Context, active hw.Slot) (*delta.Have, error) {
	u.haveMu.Lock()
	defer u.haveMu.Unlock()
	if u.have != nil {
		return u.have, nil
	}
	have := delta.NewHave()
	var opened []io.Closer
	for _, part := range []string{bundle.PartBoot, bundle.PartSystem} {
		n := partitionOf(active, part)
		pp, err := openRead(u.cfg.Card, n)
		if err == nil {
			opened = append(opened, pp)
			err = have.Scan(ctx, fmt.Sprintf("%s-%s", part, active.Name), readOnly{pp}, pp.Size())
		}
		if err != nil {
			for _, c := range opened {
				c.Close()
			}
			return nil, fmt.Errorf("scanning slot %s partition %d: %w", active.Name, n, err)
		}
	}
	u.have, u.haveOpen = have, opened
	return have, nil
}

// openRead opens partition n for reading: read-only when the card can (the active slot is
// never opened for writing on a real device), else through Partition.
func openRead(c apply.Card, n int) (apply.Partition, error) {
	if ro, ok := c.(apply.ReadOnlyCard); ok {
		return ro.ReadPartition(n)
	}
	return c.Partition(n)
}

// readOnly hides a partition's WriteAt.
type readOnly struct{ p apply.Partition }

func (r readOnly) ReadAt(b []byte, off int64) (int, error) { return r.p.ReadAt(b, off) }

func partitionOf(s hw.Slot, part string) int {
	if part == bundle.PartBoot {
		return s.Boot
	}
	return s.System
}

// deltaReader reports a delta stream's progress.
type deltaReader struct {
	r        io.ReadCloser
	stats    *delta.Stats
	u        *Updater
	closeAll func()
}

func (d *deltaReader) Read(b []byte) (int, error) {
	n, err := d.r.Read(b)
	c := d.stats.Counts()
	d.u.downloaded.Store(c.Downloaded)
	d.u.reused.Store(c.Reused())
	return n, err
}

func (d *deltaReader) Close() error {
	err := d.r.Close()
	d.closeAll()
	return err
}

var _ Source = (*delta.Remote)(nil)
