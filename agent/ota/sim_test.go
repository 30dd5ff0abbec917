package ota

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/hw"
	"github.com/edgeimg/edgeimg/hw/filecard"
	"github.com/edgeimg/edgeimg/hw/rpi4"
	"github.com/edgeimg/edgeimg/ota/apply"
	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/delta"
	"github.com/edgeimg/edgeimg/ota/otatest"
)

// The simulated device: a file-backed card in a simulated Pi 4 (hw/filecard), a root
// directory standing for the device's files (the data partition: state.json, K3s state), and
// a fake fleet (Source).

const mib = otatest.MiB

var errPowerCut = errors.New("power cut")

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// newRelease is release version. Its system is release 1's (on slot A of the card) with a
// changed region in the middle, so most of its chunks are on the card already.
func newRelease(version string) otatest.Release {
	_, sysA := otatest.SlotA()
	sys := sysA[:3*mib-54321]
	copy(sys[1*mib:], otatest.RandBytes(9, 300<<10))
	return otatest.Release{
		Manifest: otatest.Manifest(version),
		Boot:     otatest.FakeFAT(7, 150<<10, otatest.CmdOff), CmdOff: otatest.CmdOff, System: sys,
	}
}

// power is the simulated device's power supply. A cut is set on one kind of event (bytes
// downloaded, bytes written to the card, bytes of autoboot.txt's sector, the tryboot reboot,
// the trial boot's health check, state.json writes): when that kind has used its budget,
// the power goes, and every later event of any kind fails.
type power struct {
	mu     sync.Mutex
	kind   string
	left   int64
	dead   bool
	used   map[string]int64
	cancel context.CancelFunc // the running agent's context
}

// use asks for n units of kind; it returns how many may happen before the cut, and whether
// the power is still on after them.
func (p *power) use(kind string, n int64) (int64, bool) {
	if p == nil {
		return n, true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return 0, false
	}
	if p.used == nil {
		p.used = map[string]int64{}
	}
	if kind == p.kind && n >= p.left {
		ok := p.left
		p.used[kind] += ok
		p.dead = true
		if p.cancel != nil {
			p.cancel()
		}
		return ok, false
	}
	if kind == p.kind {
		p.left -= n
	}
	p.used[kind] += n
	return n, true
}

func (p *power) isDead() bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dead
}

// fakeSource is the fleet's release routes for one release.
type fakeSource struct {
	version        string
	manifest, sig  []byte
	bundle         []byte
	index          map[string][]byte // nil: the fleet serves no indexes
	chunks         map[string][]byte
	pw             *power
	manifestCalls  atomic.Int64
	bundleBytes    atomic.Int64
	chunkBytes     atomic.Int64
	transientFails atomic.Int64 // Bundle reads to fail with a network error first
}

type sourceKey struct {
	sum       [32]byte
	withIndex bool
}

var (
	sourcesMu sync.Mutex
	sources   = map[sourceKey]*fakeSource{}
)

// newSource serves bundle b, with chunk indexes when withIndex.
func newSource(t testing.TB, version string, b []byte, withIndex bool) *fakeSource {
	k := sourceKey{sha256.Sum256(b), withIndex}
	sourcesMu.Lock()
	defer sourcesMu.Unlock()
	if c, ok := sources[k]; ok && c.version == version {
		return &fakeSource{version: version, manifest: c.manifest, sig: c.sig, bundle: c.bundle, index: c.index, chunks: c.chunks}
	}
	s := parseSource(t, version, b, withIndex)
	sources[k] = s
	return &fakeSource{version: version, manifest: s.manifest, sig: s.sig, bundle: s.bundle, index: s.index, chunks: s.chunks}
}

func parseSource(t testing.TB, version string, b []byte, withIndex bool) *fakeSource {
	s := &fakeSource{version: version, bundle: b}
	tr := tar.NewReader(bytes.NewReader(b))
	parts := map[string][]byte{}
	var order []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			break // a truncated bundle: what was read so far
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			break
		}
		switch h.Name {
		case bundle.ManifestFile:
			s.manifest = data
		case bundle.SignatureFile:
			s.sig = data
		default:
			parts[h.Name] = data
			order = append(order, h.Name)
		}
	}
	if withIndex {
		s.index, s.chunks = map[string][]byte{}, map[string][]byte{}
		for _, name := range order {
			ix, err := delta.Split(name, bytes.NewReader(parts[name]))
			must(t, err)
			ib, err := ix.Marshal()
			must(t, err)
			s.index[name] = ib
			must(t, delta.Chunks(bytes.NewReader(parts[name]), func(_ int64, d []byte) error {
				sum := sha256.Sum256(d)
				s.chunks[fmt.Sprintf("%x", sum)] = bytes.Clone(d)
				return nil
			}))
		}
	}
	return s
}

func (s *fakeSource) Manifest(_ context.Context, version string) ([]byte, []byte, error) {
	s.manifestCalls.Add(1)
	if s.pw.isDead() {
		return nil, nil, errPowerCut
	}
	if version != s.version {
		return nil, nil, fmt.Errorf("release %s: %w", version, delta.ErrNotFound)
	}
	return s.manifest, s.sig, nil
}

func (s *fakeSource) Index(_ context.Context, version, part string) ([]byte, error) {
	if s.pw.isDead() {
		return nil, errPowerCut
	}
	b, ok := s.index[part]
	if !ok || version != s.version {
		return nil, fmt.Errorf("index of %s: %w", part, delta.ErrNotFound)
	}
	return b, nil
}

func (s *fakeSource) Chunk(_ context.Context, sum string) ([]byte, error) {
	b, ok := s.chunks[sum]
	if !ok {
		return nil, fmt.Errorf("chunk %s: %w", sum, delta.ErrNotFound)
	}
	if _, alive := s.pw.use("download", int64(len(b))); !alive {
		return nil, errPowerCut
	}
	s.chunkBytes.Add(int64(len(b)))
	return b, nil
}

func (s *fakeSource) Bundle(ctx context.Context, version string) io.ReadCloser {
	return &bundleReader{s: s, ctx: ctx, r: bytes.NewReader(s.bundle)}
}

type bundleReader struct {
	s   *fakeSource
	ctx context.Context
	r   *bytes.Reader
}

func (b *bundleReader) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	if b.s.transientFails.Load() > 0 && b.r.Len() < len(b.s.bundle)/2 {
		b.s.transientFails.Add(-1)
		return 0, errors.New("connection reset by peer")
	}
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	n, alive := b.s.pw.use("download", int64(min(len(p), b.r.Len())))
	m, err := b.r.Read(p[:n])
	b.s.bundleBytes.Add(int64(m))
	if !alive {
		return m, errPowerCut
	}
	return m, err
}

func (b *bundleReader) Close() error { return nil }

// cutPartition is a card partition whose writes stop at the power cut (the bytes before it
// stay written).
type cutPartition struct {
	apply.Partition
	pw *power
}

func (p cutPartition) WriteAt(b []byte, off int64) (int, error) {
	n, alive := p.pw.use("card", int64(len(b)))
	m, err := p.Partition.WriteAt(b[:n], off)
	if !alive {
		return m, errPowerCut
	}
	return m, err
}

// tornSector is autoboot.txt's sector: a write cut by the power leaves its first bytes.
type tornSector struct {
	rpi4.SectorFile
	pw *power
}

func (s tornSector) WriteAt(b []byte, off int64) (int, error) {
	n, alive := s.pw.use("autoboot", int64(len(b)))
	m, err := s.SectorFile.WriteAt(b[:n], off)
	if !alive {
		s.SectorFile.Sync()
		return m, errPowerCut
	}
	return m, err
}

func (s tornSector) Sync() error {
	if s.pw.isDead() {
		return errPowerCut
	}
	return s.SectorFile.Sync()
}

// sim is the device.
type sim struct {
	t       testing.TB
	root    string
	card    *filecard.Card
	keys    bundle.Keyring
	src     *fakeSource
	pw      *power
	health  func(ctx context.Context) error
	boot    func() error
	timeout time.Duration
	noDelta bool
	// installed is the version of the release on each slot (what release.json says).
	installed map[string]string
	// rebootAsked is set by a plain `reboot`.
	rebootAsked bool
	snapshots   int
	restores    int
	reports     []api.UpdateStatus
	mu          sync.Mutex
}

// k3sState is what the fake K3s keeps on the data partition.
const k3sState = "var/lib/rancher/k3s/state"

func newSim(t testing.TB, pk ed25519.PublicKey) *sim {
	c := otatest.NewCard(t)
	dir := t.TempDir()
	s := &sim{t: t, root: filepath.Join(dir, "root"), card: c, keys: bundle.NewKeyring(pk),
		timeout: time.Minute, installed: map[string]string{"a": "1", "b": ""}}
	s.writeK3s("k3s state of release 1")
	return s
}

func (s *sim) paths() device.Paths { return device.Paths{Root: s.root} }

func (s *sim) writeK3s(v string) {
	p := s.paths().Path(k3sState)
	must(s.t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(s.t, os.WriteFile(p, []byte(v), 0o644))
}

func (s *sim) readK3s() string {
	b, err := os.ReadFile(s.paths().Path(k3sState))
	must(s.t, err)
	return string(b)
}

func (s *sim) snapPath() string { return s.paths().Path("var/lib/edgeimg/ota/snapshot") }

func (s *sim) hasSnapshot() bool {
	_, err := os.Stat(s.snapPath())
	return err == nil
}

// run is the fake command runner: a plain reboot.
func (s *sim) Run(_ context.Context, name string, args ...string) error {
	if s.pw.isDead() {
		return errPowerCut
	}
	if name == "reboot" && len(args) == 0 {
		s.mu.Lock()
		s.rebootAsked = true
		s.mu.Unlock()
		return nil
	}
	return fmt.Errorf("unexpected command %s %q", name, args)
}

// updater is the agent's updater on the running boot, as cmd/edgeimg-agent makes it.
func (s *sim) updater(active string) *Updater {
	sw := s.card.Switch()
	run := sw.Run
	sw.Run = func(ctx context.Context, name string, args ...string) error {
		if _, alive := s.pw.use("tryboot", 1); !alive {
			return errPowerCut // before the flag
		}
		if err := run(ctx, name, args...); err != nil {
			return err
		}
		if _, alive := s.pw.use("tryboot-after", 1); !alive {
			return errPowerCut // the flag set, then the cut
		}
		return nil
	}
	s.card.WrapAutoboot = func(f rpi4.SectorFile) rpi4.SectorFile { return tornSector{f, s.pw} }
	health := s.health
	u, err := New(Config{
		Paths:  s.paths(),
		Switch: sw,
		Card: apply.CardFunc(func(n int) (apply.Partition, error) {
			p, err := s.card.Partition(n)
			if err != nil {
				return nil, err
			}
			return cutPartition{p, s.pw}, nil
		}),
		Keys:      s.keys,
		Installed: apply.Installed{Board: "rpi4", LayoutVersion: 1, Version: s.installed[active]},
		Source:    s.src,
		Runner:    s,
		Bootloader: func() error {
			if s.boot != nil {
				return s.boot()
			}
			return nil
		},
		Snapshot: func(context.Context) error {
			if s.pw.isDead() {
				return errPowerCut
			}
			s.snapshots++
			return device.WriteFileAtomic(s.snapPath(), []byte(s.readK3s()), 0o600)
		},
		Restore: func(context.Context) error {
			if s.pw.isDead() {
				return errPowerCut
			}
			b, err := os.ReadFile(s.snapPath())
			if err != nil {
				return err
			}
			s.restores++
			return device.WriteFileAtomic(s.paths().Path(k3sState), b, 0o644)
		},
		DropSnapshot: func() error {
			if s.pw.isDead() {
				return errPowerCut
			}
			err := os.Remove(s.snapPath())
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		},
		Health: func(ctx context.Context) error {
			if _, alive := s.pw.use("trial", 1); !alive {
				return errPowerCut
			}
			if health != nil {
				return health(ctx)
			}
			return nil
		},
		HealthTimeout: s.timeout,
		HealthPoll:    time.Millisecond,
		Report: func(_ context.Context, st api.UpdateStatus) error {
			if s.pw.isDead() {
				return errPowerCut
			}
			s.mu.Lock()
			s.reports = append(s.reports, st)
			s.mu.Unlock()
			return nil
		},
		MinBackoff: time.Millisecond,
		MaxBackoff: 5 * time.Millisecond,
		NoDelta:    s.noDelta,
	})
	must(s.t, err)
	u.writeFile = func(p string, b []byte, m os.FileMode) error {
		if _, alive := s.pw.use("state", 1); !alive {
			return errPowerCut
		}
		return device.WriteFileAtomic(p, b, m)
	}
	return u
}

// powerOn boots the card; it fails the test when the firmware finds nothing bootable.
func (s *sim) powerOn() (hw.Slot, bool) {
	s.t.Helper()
	flag := filepath.Join(s.card.Dir, "tryboot-flag")
	_, err := os.Stat(flag)
	trial := err == nil
	s.rebootAsked = false
	slot, err := s.card.PowerOn()
	if err != nil {
		s.t.Fatalf("power on: %v", err)
	}
	if slot.Name == "b" && s.installed["b"] == "" {
		s.installed["b"] = s.src.version // the slot boots, so it holds the new release
	}
	return slot, trial
}

// agent runs the updater of one boot as the daemon does: Boot, a heartbeat answer desiring
// version, until its background work ends. It returns the updater and whether it asked for a
// reboot (trial or plain).
func (s *sim) agent(slot hw.Slot, trial bool, version string) (*Updater, bool) {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if s.pw != nil {
		s.pw.mu.Lock()
		s.pw.cancel = cancel
		s.pw.mu.Unlock()
	}
	if s.src != nil {
		s.src.pw = s.pw
	}
	u := s.updater(slot.Name)
	if err := u.Boot(ctx); err != nil {
		if s.pw.isDead() {
			return u, false
		}
		s.t.Fatalf("boot: %v", err)
	}
	if trial && slot.Name == "b" {
		s.writeK3s("k3s state migrated by release 2")
	}
	u.Desire(version)
	u.Wait()
	_, err := os.Stat(filepath.Join(s.card.Dir, "tryboot-flag"))
	return u, err == nil || s.rebootAsked
}

func (s *sim) partSum(n int) [32]byte { return otatest.PartSum(s.t, s.card, n) }

func (s *sim) partBytes(n, size int) []byte { return otatest.PartBytes(s.t, s.card, n, size) }

func (s *sim) defaultSlot() int {
	ab, err := s.card.Autoboot()
	must(s.t, err)
	def, _, ok := rpi4.ParseAutoboot(ab)
	if !ok {
		s.t.Fatalf("autoboot.txt is broken: %q", ab)
	}
	return def
}

func stateJSON(t testing.TB, p device.Paths) string {
	b, err := os.ReadFile(p.Path(StateFile))
	if err != nil {
		return err.Error()
	}
	var s State
	must(t, json.Unmarshal(b, &s))
	return fmt.Sprintf("%+v", s)
}
