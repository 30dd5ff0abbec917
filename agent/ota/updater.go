package ota

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/k3s"
	"github.com/edgeimg/edgeimg/agent/retry"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/hw"
	"github.com/edgeimg/edgeimg/ota/apply"
	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/delta"
)

// Source is where releases come from: the fleet's release routes (*delta.Remote).
type Source interface {
	// Manifest returns a release's manifest.json and manifest.sig, the exact signed bytes.
	Manifest(ctx context.Context, version string) (manifest, sig []byte, err error)
	// Index returns the chunk index of a part of a release (delta.ErrNotFound when the
	// fleet serves none).
	Index(ctx context.Context, version, part string) ([]byte, error)
	// Chunk returns a chunk's bytes by sha256.
	Chunk(ctx context.Context, sha256 string) ([]byte, error)
	// Bundle streams a release's whole bundle, resuming with HTTP ranges after network
	// errors.
	Bundle(ctx context.Context, version string) io.ReadCloser
}

// Reasons of refusals and failures the updater adds to the bundle.Reason ones.
const (
	// ErrBootloader refuses an update when the EEPROM bootloader cannot do tryboot_a_b.
	ErrBootloader bundle.Reason = "bootloader too old"
	// ReasonHealthTimeout is the failure of a trial boot whose health checks did not pass in
	// time.
	ReasonHealthTimeout = "health timeout"
	// ReasonNoTrial is the failure of a trial boot that never reported back (twice, when it
	// never started its health checks): the new release did not boot, or the device lost
	// power or was reset during the trial.
	ReasonNoTrial = "trial boot did not come up"
	// ReasonCommit is the failure to make the new slot the default.
	ReasonCommit = "commit failed"
)

// maxDetail bounds api.UpdateStatus.Detail (the fleet takes 512 bytes).
const maxDetail = 512

// maxTrialTries is how many times a trial boot that never reported back is tried before the
// update fails (ReasonNoTrial).
const maxTrialTries = 2

// Config is what an Updater acts on. Zero fields take the defaults written beside them
// (New applies them).
type Config struct {
	// Paths locates the device's files (StateFile, the image's files).
	Paths device.Paths
	// Switch is the board's A/B switch.
	Switch hw.SlotSwitch
	// Card opens the card's partitions: the inactive slot's for writing, the active slot's
	// for reading (delta downloads reuse its chunks).
	Card apply.Card
	// Keys are the trusted release signing keys.
	Keys bundle.Keyring
	// Installed is the running release.
	Installed apply.Installed
	// Source is the fleet; nil: no downloads (a trial boot is still checked and committed).
	Source Source
	// Runner runs the plain reboot after a failed trial, and K3s's systemctl for the
	// snapshot; default k3s.ExecRunner.
	Runner k3s.Runner
	// Bootloader checks that the firmware supports tryboot_a_b; default CheckTryboot.
	Bootloader func() error
	// Snapshot, Restore and DropSnapshot save the K3s state before the trial boot, put it
	// back after a failed one, and remove it; defaults: this package's functions of the
	// same names.
	Snapshot     func(ctx context.Context) error
	Restore      func(ctx context.Context) error
	DropSnapshot func() error
	// Health checks K3s on a trial boot, returning nil once it is healthy (it is called
	// again until then); default K3sHealth(Paths, ""), which passes at once when the image
	// ships no K3s (device.K3sInfo).
	Health func(ctx context.Context) error
	// HealthTimeout bounds the trial boot's health checks; default from ConfigFile.
	HealthTimeout time.Duration
	// HealthPoll is the pause between two health checks; default 5 s.
	HealthPoll time.Duration
	// Report, when set, sends the update status to the fleet at once (best effort, before
	// a reboot); the heartbeats carry Status anyway.
	Report func(ctx context.Context, st api.UpdateStatus) error
	// Log receives what the updater does; default: discard.
	Log *slog.Logger
	// MinBackoff and MaxBackoff bound the download retries; defaults 5 s and 10 min.
	MinBackoff, MaxBackoff time.Duration
	// NoDelta turns delta downloads off: always the whole bundle.
	NoDelta bool
}

// Updater runs the device's updates: Boot once at start, then Desire with every fleet answer.
// Its methods are safe for concurrent use.
type Updater struct {
	cfg Config

	// progress of the running download
	downloaded, reused atomic.Int64

	mu      sync.Mutex
	ctx     context.Context // Boot's: bounds the background work
	state   *State
	detail  string // transient detail of a running download (the last error)
	source  Source
	dl      *download
	busy    bool // a trial or a reboot is under way: no downloads
	reached chan struct{}
	reachOK bool
	wg      sync.WaitGroup

	haveMu   sync.Mutex
	have     *delta.Have // the active slot's chunks, once scanned
	haveOpen []io.Closer // its partitions

	// writeFile replaces a file atomically (device.WriteFileAtomic; tests cut power in it).
	writeFile func(string, []byte, os.FileMode) error
}

type download struct {
	version string
	cancel  context.CancelFunc
	done    chan struct{}
}

// New returns an Updater; it reads the persisted state and applies the defaults.
func New(cfg Config) (*Updater, error) {
	if cfg.Switch == nil || cfg.Card == nil {
		return nil, errors.New("ota: no slot switch or card")
	}
	if cfg.Runner == nil {
		cfg.Runner = k3s.ExecRunner{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.HealthTimeout <= 0 {
		s, err := LoadSettings(cfg.Paths)
		if err != nil {
			return nil, err
		}
		cfg.HealthTimeout = s.HealthTimeout()
	}
	if cfg.HealthPoll <= 0 {
		cfg.HealthPoll = 5 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 5 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(10*time.Minute, cfg.MinBackoff)
	}
	defaults(&cfg)
	st, err := LoadState(cfg.Paths)
	if err != nil {
		return nil, err
	}
	return &Updater{cfg: cfg, state: st, source: cfg.Source, reached: make(chan struct{}), writeFile: device.WriteFileAtomic}, nil
}

// SetSource sets (or replaces) the fleet releases come from.
func (u *Updater) SetSource(s Source) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.source = s
}

// Status returns the status of the latest update, for the heartbeat; nil when there has
// been none.
func (u *Updater) Status() *api.UpdateStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.statusLocked()
}

func (u *Updater) statusLocked() *api.UpdateStatus {
	st := u.state
	if st == nil {
		return nil
	}
	s := &api.UpdateStatus{Version: st.Version, State: st.Phase, Reason: st.Reason, Detail: st.Detail, Total: st.Total}
	if st.Phase == api.UpdateDownloading || st.Phase == api.UpdateRebooting {
		s.Downloaded, s.Reused = u.downloaded.Load(), u.reused.Load()
		if s.Detail == "" {
			s.Detail = u.detail
		}
	}
	if len(s.Detail) > maxDetail {
		s.Detail = strings.ToValidUTF8(s.Detail[:maxDetail], "")
	}
	return s
}

// State returns a copy of the persisted state (nil: none).
func (u *Updater) State() *State {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state == nil {
		return nil
	}
	s := *u.state
	return &s
}

// save persists s and makes it the current state.
func (u *Updater) save(s State) error {
	if err := saveState(u.cfg.Paths, &s, u.writeFile); err != nil {
		return err
	}
	u.mu.Lock()
	u.state = &s
	u.mu.Unlock()
	return nil
}

// Wait waits for the background work (downloads, trial checks) to end and releases what the
// updater holds; cancel Boot's context first.
func (u *Updater) Wait() {
	u.wg.Wait()
	u.haveMu.Lock()
	defer u.haveMu.Unlock()
	for _, c := range u.haveOpen {
		c.Close()
	}
	u.have, u.haveOpen = nil, nil
}

// Boot handles what the previous boot left: on a trial boot of an armed update it starts the
// health checks in the background (committing, or rebooting back to the old slot); on the
// old slot after a trial that failed or never came up it restores the K3s snapshot and
// records the failure; on the new slot after a commit whose record a power cut lost it
// records the commit. ctx bounds all of the updater's background work. Call it once, before
// K3s starts and before Desire.
func (u *Updater) Boot(ctx context.Context) error {
	u.mu.Lock()
	u.ctx = ctx
	st := u.state
	u.mu.Unlock()
	trial, err := u.cfg.Switch.IsTrial()
	if err != nil {
		return fmt.Errorf("slot switch: %w", err)
	}
	active, err := u.cfg.Switch.Active()
	if err != nil {
		return fmt.Errorf("slot switch: %w", err)
	}
	if trial {
		// The other slot is the fallback of a trial boot: nothing may be written to it.
		u.setBusy()
	}
	if st == nil || (st.Phase != api.UpdateRebooting && st.Phase != api.UpdateTrial && st.Phase != api.UpdateFailed) {
		if trial {
			u.cfg.Log.Warn("trial boot without an armed update: not committing it", "slot", active.Name)
		}
		return nil
	}
	s := *st
	switch {
	case active.Name == s.Slot && trial && s.Phase == api.UpdateFailed:
		// The trial failed and the plain reboot did not happen: reboot again.
		return u.rebootBack(ctx)
	case active.Name == s.Slot && trial:
		s.Phase = api.UpdateTrial
		if err := u.save(s); err != nil {
			return err
		}
		u.cfg.Log.Info("trial boot: checking the new release's health", "version", s.Version, "slot", s.Slot, "timeout", u.cfg.HealthTimeout)
		u.wg.Add(1)
		go u.checkTrial(ctx)
		return nil
	case active.Name == s.Slot:
		// The default boot is the new slot: it was committed, its record lost to a power cut.
		// Commit again (a no-op unless a torn write left the trial entry pointing at this slot
		// too) and record it.
		if err := u.cfg.Switch.Commit(active); err != nil {
			return fmt.Errorf("slot switch: %w", err)
		}
		return u.finishCommit(s)
	case trial:
		u.cfg.Log.Warn("trial boot of a slot no update armed: not committing it", "slot", active.Name, "update", s.Version, "update_slot", s.Slot)
		return nil
	case s.Phase == api.UpdateRebooting && max(s.Tries, 1) < maxTrialTries:
		// Back on the old slot, and the trial never started its health checks: either the
		// reboot into it did not happen (the power went, or this agent was restarted, between
		// arming the trial and the reboot) or the release did not boot far enough to run the
		// agent. The slot was written and verified before the trial was armed: try it once
		// more before calling the release broken. K3s has not started since its snapshot.
		s.Tries = max(s.Tries, 1) + 1
		if err := u.save(s); err != nil {
			return err
		}
		u.setBusy()
		u.cfg.Log.Warn("the trial boot did not report back: rebooting into it once more", "version", s.Version, "slot", s.Slot, "try", s.Tries)
		if err := u.cfg.Switch.TryReboot(ctx); err != nil {
			return fmt.Errorf("rebooting into the trial of %s again: %w", s.Version, err)
		}
		return nil
	default:
		// Back on the old slot.
		if s.Phase != api.UpdateFailed {
			s.Phase, s.Reason = api.UpdateFailed, ReasonNoTrial
			s.Detail = fmt.Sprintf("release %s on slot %s did not pass its trial boot (it did not boot, or it lost power or was reset during its health checks): back on slot %s", s.Version, s.Slot, active.Name)
			if err := u.save(s); err != nil {
				return err
			}
		}
		if s.Snapshot {
			if err := u.cfg.Restore(ctx); errors.Is(err, ErrNoSnapshot) {
				u.cfg.Log.Warn("no K3s snapshot to restore after the failed update", "version", s.Version, "err", err)
			} else if err != nil {
				return fmt.Errorf("restoring the K3s state after the failed update to %s: %w", s.Version, err)
			}
			if err := u.cfg.DropSnapshot(); err != nil {
				u.cfg.Log.Warn("removing the K3s snapshot", "err", err)
			}
			s.Snapshot = false
			if err := u.save(s); err != nil {
				return err
			}
			u.cfg.Log.Warn("update failed: K3s state restored", "version", s.Version, "reason", s.Reason, "detail", s.Detail)
		}
		return nil
	}
}

func (u *Updater) setBusy() {
	u.mu.Lock()
	u.busy = true
	u.mu.Unlock()
}

// finishCommit records a commit (idempotent).
func (u *Updater) finishCommit(s State) error {
	if s.Snapshot {
		if err := u.cfg.DropSnapshot(); err != nil {
			u.cfg.Log.Warn("removing the K3s snapshot", "err", err)
		}
	}
	s.Phase, s.Reason, s.Detail, s.Snapshot = api.UpdateCommitted, "", "", false
	if err := u.save(s); err != nil {
		return err
	}
	u.cfg.Log.Info("update committed", "version", s.Version, "slot", s.Slot)
	return nil
}

// checkTrial runs the trial boot's health checks, then commits or goes back.
func (u *Updater) checkTrial(ctx context.Context) {
	defer u.wg.Done()
	hctx, cancel := context.WithTimeout(ctx, u.cfg.HealthTimeout)
	err := u.health(hctx)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: a reboot now goes back to the old slot by itself
	}
	s := *u.State()
	if err == nil {
		slot, serr := u.slot(s.Slot)
		if serr == nil {
			serr = u.cfg.Switch.Commit(slot)
		}
		if serr == nil {
			if err := u.finishCommit(s); err != nil {
				u.cfg.Log.Error("recording the commit", "err", err)
				return
			}
			// The other slot is no longer the fallback: the next release may be installed
			// during this boot.
			u.mu.Lock()
			u.busy = false
			u.mu.Unlock()
			return
		}
		s.Reason, s.Detail = ReasonCommit, serr.Error()
	} else {
		s.Reason, s.Detail = ReasonHealthTimeout, err.Error()
	}
	s.Phase = api.UpdateFailed
	if err := u.save(s); err != nil {
		u.cfg.Log.Error("recording the failed trial", "err", err)
	}
	u.cfg.Log.Error("trial boot failed: rebooting into the old release", "version", s.Version, "reason", s.Reason, "detail", s.Detail)
	if err := u.rebootBack(ctx); err != nil {
		u.cfg.Log.Error("rebooting", "err", err)
	}
}

// health waits for the fleet to be reached (a heartbeat answered: Desire), then for K3s.
func (u *Updater) health(ctx context.Context) error {
	select {
	case <-u.reached:
	case <-ctx.Done():
		return fmt.Errorf("the fleet was not reached within %s", u.cfg.HealthTimeout)
	}
	if u.cfg.Health == nil {
		return nil
	}
	for {
		err := u.cfg.Health(ctx)
		if err == nil {
			return nil
		}
		if !retry.Sleep(ctx, u.cfg.HealthPoll) {
			return fmt.Errorf("K3s not healthy within %s: %w", u.cfg.HealthTimeout, err)
		}
	}
}

// rebootBack reports the status (best effort) and reboots without tryboot: the firmware
// boots the default, old, slot.
func (u *Updater) rebootBack(ctx context.Context) error {
	u.report(ctx)
	return u.cfg.Runner.Run(ctx, "reboot")
}

func (u *Updater) report(ctx context.Context) {
	if u.cfg.Report == nil {
		return
	}
	st := u.Status()
	if st == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := u.cfg.Report(rctx, *st); err != nil {
		u.cfg.Log.Warn("reporting the update status", "err", err)
	}
}

func (u *Updater) slot(name string) (hw.Slot, error) {
	a, err := u.cfg.Switch.Active()
	if err != nil {
		return hw.Slot{}, err
	}
	if a.Name == name {
		return a, nil
	}
	i, err := u.cfg.Switch.Inactive()
	if err != nil {
		return hw.Slot{}, err
	}
	if i.Name == name {
		return i, nil
	}
	return hw.Slot{}, fmt.Errorf("no slot %q", name)
}

// Desire tells the updater the release the fleet wants the device to run (api.Desired.Version,
// "" for no change). It is called with every heartbeat answer, which also tells a trial boot
// that the fleet is reachable. A release not yet installed, failed or refused is downloaded in
// the background (one at a time; a new target cancels the running download).
func (u *Updater) Desire(version string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.reachOK {
		u.reachOK = true
		close(u.reached)
	}
	if u.ctx == nil || u.busy || version == "" || version == u.cfg.Installed.Version || u.source == nil {
		return
	}
	if st := u.state; st != nil && st.Version == version && st.done() {
		return
	}
	var prev chan struct{}
	if u.dl != nil {
		select {
		case <-u.dl.done:
		default:
			if u.dl.version == version {
				return
			}
			u.dl.cancel()
			prev = u.dl.done
		}
	}
	ctx, cancel := context.WithCancel(u.ctx)
	d := &download{version: version, cancel: cancel, done: make(chan struct{})}
	u.dl = d
	u.wg.Add(1)
	go u.run(ctx, d, prev)
}

// run installs d.version, retrying with backoff, until it reboots, is refused or cancelled.
func (u *Updater) run(ctx context.Context, d *download, prev chan struct{}) {
	defer u.wg.Done()
	defer close(d.done)
	defer d.cancel()
	if prev != nil {
		<-prev
	}
	delay := u.cfg.MinBackoff
	for {
		err := u.install(ctx, d.version)
		if err == nil || ctx.Err() != nil {
			return
		}
		var be *bundle.Error
		if errors.As(err, &be) {
			u.refuse(d.version, be)
			return
		}
		u.cfg.Log.Warn("update download failed; retrying", "version", d.version, "err", err, "in", delay)
		u.mu.Lock()
		u.detail = "retrying: " + err.Error()
		u.mu.Unlock()
		if !retry.Sleep(ctx, retry.Jitter(delay)) {
			return
		}
		delay = min(2*delay, u.cfg.MaxBackoff)
	}
}

// refuse records a refused release; it is not tried again.
func (u *Updater) refuse(version string, be *bundle.Error) {
	s := State{Version: version, Phase: api.UpdateRefused, Reason: string(be.Reason), Detail: be.Error()}
	if old := u.State(); old != nil {
		s.Total = old.Total
		if old.Snapshot {
			if err := u.cfg.DropSnapshot(); err != nil {
				u.cfg.Log.Warn("removing the K3s snapshot", "err", err)
				s.Snapshot = true
			}
		}
	}
	if err := u.save(s); err != nil {
		u.cfg.Log.Error("recording the refusal", "err", err)
	}
	u.cfg.Log.Error("update refused", "version", version, "reason", be.Reason, "detail", be.Error())
}

// install downloads version into the inactive slot, snapshots K3s, and reboots into a trial.
func (u *Updater) install(ctx context.Context, version string) error {
	u.mu.Lock()
	src := u.source
	u.detail = ""
	u.mu.Unlock()
	u.downloaded.Store(0)
	u.reused.Store(0)

	// 1. The manifest, verified before anything else.
	mb, sb, err := src.Manifest(ctx, version)
	if err != nil {
		return err
	}
	m, _, err := bundle.VerifyManifest(mb, sb, u.cfg.Keys)
	if err != nil {
		return err
	}
	if m.Version != version {
		return bundle.Errorf(bundle.ErrMalformed, "the fleet's release %s is signed as version %s", version, m.Version)
	}
	// 2. For this device? Can it boot it?
	if err := apply.Check(m, u.cfg.Installed); err != nil {
		return err
	}
	if err := u.cfg.Bootloader(); err != nil {
		return &bundle.Error{Reason: ErrBootloader, Detail: "the bootloader cannot boot a trial slot (tryboot_a_b)", Err: err}
	}
	active, err := u.cfg.Switch.Active()
	if err != nil {
		return fmt.Errorf("slot switch: %w", err)
	}
	inactive, err := u.cfg.Switch.Inactive()
	if err != nil {
		return fmt.Errorf("slot switch: %w", err)
	}
	var total int64
	for _, p := range m.Parts {
		total += p.Size
	}
	s := State{Version: version, Phase: api.UpdateDownloading, Slot: inactive.Name, From: active.Name, Total: total}
	if old := u.State(); old != nil && old.Snapshot {
		s.Snapshot = true
	}
	if err := u.save(s); err != nil {
		return err
	}

	// 3. Stream it into the inactive slot (ota/apply checks the signature again, and every
	// part's hash, and arms the trial boot).
	r, err := u.stream(ctx, src, version, m, mb, sb, active, inactive)
	if err != nil {
		return err
	}
	wr := &watchReader{r: r}
	res, err := apply.Apply(ctx, wr, apply.Target{Keys: u.cfg.Keys, Installed: u.cfg.Installed, Switch: u.cfg.Switch, Card: u.cfg.Card})
	r.Close()
	if err != nil {
		if wr.err != nil {
			// The stream broke (network, cancel): not the bundle's fault.
			return fmt.Errorf("downloading release %s: %w (%v)", version, wr.err, err)
		}
		return err
	}
	if got, _ := res.Manifest.Marshal(); !bytes.Equal(got, mb) {
		return bundle.Errorf(bundle.ErrMalformed, "the bundle of release %s carries another manifest than the one the fleet serves", version)
	}

	// 4. Snapshot K3s, then reboot into the trial.
	s.Snapshot = true
	if err := u.save(s); err != nil {
		return err
	}
	if err := u.cfg.Snapshot(ctx); err != nil {
		return fmt.Errorf("snapshotting K3s: %w", err)
	}
	s.Phase, s.Tries = api.UpdateRebooting, 1
	if err := u.save(s); err != nil {
		return err
	}
	u.mu.Lock()
	u.busy = true
	u.mu.Unlock()
	u.report(ctx)
	u.cfg.Log.Info("update written and verified: rebooting into a trial of it", "version", version, "slot", res.Slot.Name)
	if err := u.cfg.Switch.TryReboot(ctx); err != nil {
		u.mu.Lock()
		u.busy = false
		u.mu.Unlock()
		return fmt.Errorf("rebooting into the trial: %w", err)
	}
	return nil
}

// watchReader keeps the first error of a stream that is not io.EOF.
type watchReader struct {
	r   io.Reader
	err error
}

func (w *watchReader) Read(b []byte) (int, error) {
	n, err := w.r.Read(b)
	if err != nil && err != io.EOF && w.err == nil {
		w.err = err
	}
	return n, err
}
