package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/fleetclient"
	"github.com/edgeimg/edgeimg/agent/heartbeat"
	"github.com/edgeimg/edgeimg/agent/identity"
	"github.com/edgeimg/edgeimg/agent/k3s"
	"github.com/edgeimg/edgeimg/agent/ota"
	"github.com/edgeimg/edgeimg/agent/retry"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/ota/delta"
)

// Config configures Run. Zero fields take the defaults written beside them.
type Config struct {
	// Paths locates the device's files (tests use a temporary root).
	Paths device.Paths
	// ConfigDir is the mounted config partition holding edgeimg/device.yaml.
	ConfigDir string
	// ConfigPARTUUID, when ConfigDir is empty, is the config partition's PARTUUID: Run mounts
	// it (vfat) on a directory under /run for the import and unmounts it right after. With
	// neither, the import is skipped.
	ConfigPARTUUID string
	// FleetURL is the fleet server; default: "url" of /usr/lib/edgeimg/fleet.json. With none,
	// the device runs standalone and does not enroll.
	FleetURL string
	// CAPEM is the only trust root for the fleet server; default /usr/lib/edgeimg/fleet-ca.pem.
	CAPEM []byte
	// Heartbeat is the heartbeat interval; default "heartbeat_seconds" of fleet.json, else 30 s.
	// The fleet's enrollment answer, when it sets one, wins.
	Heartbeat time.Duration
	// Version and Slot are reported to the fleet.
	Version, Slot string
	// Runner starts and stops K3s (systemctl); default k3s.ExecRunner.
	Runner k3s.Runner
	// Log receives what the agent does; default: discard.
	Log *slog.Logger
	// Now is the clock; default time.Now. It is floored at the build epoch (the mtime of
	// /usr/lib/clock-epoch), like systemd does at boot.
	Now func() time.Time
	// MinBackoff and MaxBackoff bound the enrollment retries (exponential, with jitter);
	// defaults 2 s and 5 min.
	MinBackoff, MaxBackoff time.Duration
	// FirstAttempt bounds the first enrollment attempt, after which a device that could not
	// enroll starts K3s as a standalone server; default 15 s.
	FirstAttempt time.Duration
	// Node reports the K3s node status; default: the local API through the role's kubeconfig.
	Node func(ctx context.Context) (bool, []string, error)
	// OTA, when set, makes the device take updates: Run completes it (the fleet's release
	// routes as Source, reporting through a heartbeat, the K3s node's name for the health
	// check, the Runner, the log) and runs an ota.Updater. Nil: no updates.
	OTA *ota.Config

	// afterEnrollAnswer, in tests, runs after the fleet's answer arrived and before anything of
	// it is written: an error there is a crash at that point.
	afterEnrollAnswer func() error
}

// FleetConfig is /usr/lib/edgeimg/fleet.json, which the builder writes from the spec's fleet:.
type FleetConfig struct {
	URL              string `json:"url"`
	HeartbeatSeconds int    `json:"heartbeat_seconds,omitempty"`
}

// LoadFleetConfig reads the image's fleet settings; zero when the image has none.
func LoadFleetConfig(p device.Paths) (FleetConfig, []byte, error) {
	var fc FleetConfig
	b, err := os.ReadFile(p.Path(device.FleetConfig))
	if errors.Is(err, fs.ErrNotExist) {
		return fc, nil, nil
	}
	if err != nil {
		return fc, nil, fmt.Errorf("reading the fleet settings: %w", err)
	}
	if err := json.Unmarshal(b, &fc); err != nil {
		return fc, nil, fmt.Errorf("%s: %w", p.Path(device.FleetConfig), err)
	}
	ca, err := os.ReadFile(p.Path(device.FleetCA))
	if err != nil {
		return fc, nil, fmt.Errorf("reading the fleet CA: %w", err)
	}
	return fc, ca, nil
}

// Epoch returns the build epoch: the mtime of /usr/lib/clock-epoch, or zero.
func Epoch(p device.Paths) time.Time {
	fi, err := os.Stat(p.Path(device.ClockEpoch))
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

type agent struct {
	cfg      Config
	p        device.Paths
	log      *slog.Logger
	id       string
	key      ed25519.PrivateKey
	settings *device.Settings
	cert     atomic.Pointer[tls.Certificate]
	client   *fleetclient.Client
	interval time.Duration
	updater  *ota.Updater

	mu   sync.Mutex
	errs []string
}

func (a *agent) now() time.Time {
	t := a.cfg.Now()
	if e := Epoch(a.p); t.Before(e) {
		return e
	}
	return t
}

// record keeps an error for the next heartbeat (the last ten).
func (a *agent) record(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	msg := err.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	a.errs = append(a.errs, msg)
	if len(a.errs) > 10 {
		a.errs = a.errs[len(a.errs)-10:]
	}
}

func (a *agent) takeErrors() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.errs
	a.errs = nil
	return e
}

// Run runs the agent until ctx ends. Every step is idempotent and its state written
// atomically, so a power cut anywhere is followed by a run that carries on.
func Run(ctx context.Context, cfg Config) error {
	a, err := start(cfg)
	if err != nil {
		return err
	}
	return a.run(ctx)
}

func start(cfg Config) (*agent, error) {
	if cfg.Runner == nil {
		cfg.Runner = k3s.ExecRunner{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 2 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Minute, cfg.MinBackoff)
	}
	if cfg.FirstAttempt <= 0 {
		cfg.FirstAttempt = 15 * time.Second
	}
	a := &agent{cfg: cfg, p: cfg.Paths, log: cfg.Log}
	if cfg.FleetURL == "" || cfg.CAPEM == nil {
		fc, ca, err := LoadFleetConfig(cfg.Paths)
		if err != nil {
			// A broken fleet configuration must not keep K3s from starting: run standalone
			// and say why in the log (there is no fleet to report it to).
			a.log.Error("ignoring the image's fleet settings: running K3s standalone", "err", err)
			fc, ca = FleetConfig{}, nil
		}
		if cfg.FleetURL == "" {
			a.cfg.FleetURL = fc.URL
		}
		if cfg.CAPEM == nil {
			a.cfg.CAPEM = ca
		}
		if cfg.Heartbeat == 0 {
			a.cfg.Heartbeat = time.Duration(fc.HeartbeatSeconds) * time.Second
		}
	}
	a.interval = a.cfg.Heartbeat
	if a.interval <= 0 {
		a.interval = 30 * time.Second
	}
	return a, nil
}

func (a *agent) run(ctx context.Context) error {
	// 1. Settings from the config partition, onto the data partition.
	var err error
	if a.cfg.ConfigDir != "" {
		a.settings, err = device.Import(a.p, a.cfg.ConfigDir)
	} else if a.cfg.ConfigPARTUUID != "" {
		a.settings, err = a.importFromPartition(ctx)
	}
	if err != nil {
		a.log.Error("importing the device settings", "err", err)
		a.record(err)
	}
	if a.settings == nil {
		if a.settings, err = device.LoadSettings(a.p); err != nil {
			return err
		}
	}
	a.applyNetwork(ctx)
	// 2. Identity: ID, key, certificate.
	if a.id, err = device.ID(a.p); err != nil {
		return fmt.Errorf("device id: %w", err)
	}
	if a.key, err = identity.Key(a.p); err != nil {
		return fmt.Errorf("device key: %w", err)
	}
	cert, _, err := identity.Certificate(a.p, a.key)
	if err != nil {
		return err
	}
	a.cert.Store(cert)
	a.log.Info("device identity", "id", a.id, "enrolled_before", cert != nil)

	if a.cfg.FleetURL != "" {
		if a.client, err = fleetclient.New(a.cfg.FleetURL, a.cfg.CAPEM, a.now, func() *tls.Certificate { return a.cert.Load() }); err != nil {
			a.log.Error("ignoring the fleet settings: running K3s standalone", "err", err)
		}
	}
	// 3. Updates: a trial boot checks its health in the background (it needs the heartbeats
	// below), the boot after a failed trial restores the K3s state before K3s starts.
	if a.cfg.OTA != nil {
		a.startUpdater(ctx)
		if a.updater != nil {
			defer a.updater.Wait()
		}
	}
	if a.client == nil {
		// No fleet (the image has none, or its settings are broken): a standalone K3s server
		// that never enrolls. The settings are imported all the same (host name, network).
		a.log.Info("no fleet configured: running K3s in the image's role")
		if err := a.applyApplied(ctx); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}

	// 4. Enrollment; offline first: K3s runs standalone while the fleet cannot be reached.
	enr, err := identity.LoadEnrollment(a.p)
	if err != nil {
		return err
	}
	if enr == nil {
		first, cancel := context.WithTimeout(ctx, a.cfg.FirstAttempt)
		enr, err = a.enroll(first)
		cancel()
		if err != nil {
			if errors.Is(err, errCrash) {
				return err
			}
			a.logEnrollError(err)
			a.log.Info("not enrolled yet: starting K3s in the image's role; enrollment goes on in the background")
			if err := a.applyApplied(ctx); err != nil {
				a.log.Error("starting K3s", "err", err)
				a.record(err)
			}
			if enr, err = a.enrollLoop(ctx); err != nil {
				return err
			}
			if enr == nil {
				return nil // ctx ended
			}
		}
	}
	if enr.HeartbeatIntervalSeconds > 0 {
		a.interval = time.Duration(enr.HeartbeatIntervalSeconds) * time.Second
	}
	a.applyRole(ctx, enr.Role)

	// 5. Heartbeats.
	return a.heartbeatLoop(ctx)
}

// startUpdater makes the updater and lets it handle what the previous boot left.
func (a *agent) startUpdater(ctx context.Context) {
	oc := *a.cfg.OTA
	if oc.Runner == nil {
		oc.Runner = a.cfg.Runner
	}
	if oc.Log == nil {
		oc.Log = a.log.With("component", "ota")
	}
	if oc.Paths == (device.Paths{}) {
		oc.Paths = a.p
	}
	if oc.Health == nil {
		oc.Health = ota.K3sHealth(a.p, a.settings.Hostname)
	}
	if a.client != nil {
		if oc.Source == nil {
			oc.Source = &delta.Remote{Client: a.client.Downloads(), BaseURL: a.client.BaseURL()}
		}
		if oc.Report == nil {
			oc.Report = a.reportUpdate
		}
	}
	u, err := ota.New(oc)
	if err != nil {
		a.log.Error("updates are off", "err", err)
		a.record(fmt.Errorf("updates are off: %w", err))
		return
	}
	if err := u.Boot(ctx); err != nil {
		a.log.Error("update after the reboot", "err", err)
		a.record(err)
	}
	a.updater = u
}

// reportUpdate sends a heartbeat with just the update status (before a reboot).
func (a *agent) reportUpdate(ctx context.Context, st api.UpdateStatus) error {
	_, err := a.client.Heartbeat(ctx, api.Heartbeat{Version: a.cfg.Version, Slot: a.cfg.Slot, Update: &st})
	return err
}

// importFromPartition mounts the config partition briefly and imports device.yaml.
func (a *agent) importFromPartition(ctx context.Context) (*device.Settings, error) {
	dir := a.p.Path("run/edgeimg/config")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	dev := a.p.Path("dev/disk/by-partuuid/" + a.cfg.ConfigPARTUUID)
	if err := a.cfg.Runner.Run(ctx, "mount", "-t", "vfat", "-o", "rw,nosuid,nodev,noexec,sync", dev, dir); err != nil {
		return nil, fmt.Errorf("mounting the config partition: %w", err)
	}
	s, err := device.Import(a.p, dir)
	if uerr := a.cfg.Runner.Run(ctx, "umount", dir); uerr != nil && err == nil {
		err = fmt.Errorf("unmounting the config partition: %w", uerr)
	}
	return s, err
}

// Slot returns the A/B slot booted ("a" or "b") from the firmware's partition number in the
// device tree (/proc/device-tree/chosen/bootloader/partition: 2 is a, 3 is b), or "".
func Slot(p device.Paths) string {
	b, err := os.ReadFile(p.Path("proc/device-tree/chosen/bootloader/partition"))
	if err != nil || len(b) != 4 {
		return ""
	}
	switch uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) {
	case 2:
		return "a"
	case 3:
		return "b"
	}
	return ""
}

// applyApplied makes sure K3s runs: the configured role if there is one, else the image's
// (k3s.ImageRole: a server, or an agent of the server in the image's config), provisionally
// until the fleet assigns one.
func (a *agent) applyApplied(ctx context.Context) error {
	cur, err := k3s.LoadApplied(a.p)
	if err != nil {
		return err
	}
	if cur != nil {
		return k3s.Apply(ctx, a.p, a.cfg.Runner, cur.Role, cur.Provisional, a.settings.Hostname, a.settings.Labels)
	}
	role, err := k3s.ImageRole(a.p)
	if err != nil {
		return err
	}
	a.log.Info("starting K3s in the image's role until the fleet assigns one", "role", role.String())
	return k3s.Apply(ctx, a.p, a.cfg.Runner, role, true, a.settings.Hostname, a.settings.Labels)
}

// applyRole applies the fleet's role; a refusal is logged and reported in the heartbeats.
func (a *agent) applyRole(ctx context.Context, role api.Role) {
	if err := k3s.Apply(ctx, a.p, a.cfg.Runner, role, false, a.settings.Hostname, a.settings.Labels); err != nil {
		a.log.Error("applying the K3s role", "role", role.String(), "err", err)
		a.record(err)
		return
	}
	a.log.Info("K3s role applied", "role", role.String())
}

var errCrash = errors.New("crash (test)")

// enroll enrolls once: with the device certificate when it has one (enrolling again after a
// reset), else (or when the fleet does not take the certificate) with the settings' token.
func (a *agent) enroll(ctx context.Context) (*identity.Enrollment, error) {
	csr, err := identity.CSR(a.id, a.key)
	if err != nil {
		return nil, err
	}
	req := api.EnrollRequest{DeviceID: a.id, CSR: csr, Hostname: a.settings.Hostname, Labels: a.settings.Labels, Version: a.cfg.Version, Slot: a.cfg.Slot}
	var resp *api.EnrollResponse
	if c := a.cert.Load(); c != nil && a.now().Before(c.Leaf.NotAfter) {
		resp, err = a.client.Enroll(ctx, req)
		var fe *fleetclient.Error
		if err != nil && errors.As(err, &fe) && !fe.Temporary() && fe.Code != "revoked" && a.settings.Token != "" {
			a.log.Info("the fleet did not take the device certificate; enrolling with the token", "reason", fe.Reason)
			resp = nil
		} else if err != nil {
			return nil, err
		}
	}
	if resp == nil {
		if a.settings.Token == "" {
			return nil, fmt.Errorf("no enrollment token: write one into %s on the card's first (FAT) partition, or run edgeimg personalize", device.SettingsOnConfig)
		}
		req.Token = a.settings.Token
		if resp, err = a.client.Enroll(ctx, req); err != nil {
			return nil, err
		}
	}
	if a.cfg.afterEnrollAnswer != nil {
		if err := a.cfg.afterEnrollAnswer(); err != nil {
			return nil, errCrash
		}
	}
	if err := identity.SaveCertificate(a.p, a.key, []byte(resp.Certificate), []byte(resp.CA)); err != nil {
		return nil, err
	}
	cert, _, err := identity.Certificate(a.p, a.key)
	if err != nil {
		return nil, err
	}
	a.cert.Store(cert)
	a.client.CloseIdle()
	enr := &identity.Enrollment{DeviceID: resp.DeviceID, Role: resp.Role, HeartbeatIntervalSeconds: resp.HeartbeatIntervalSeconds, EnrolledAt: a.now().UTC()}
	if err := identity.SaveEnrollment(a.p, enr); err != nil {
		return nil, err
	}
	a.log.Info("enrolled", "id", a.id, "role", resp.Role.String(), "certificate_until", cert.Leaf.NotAfter)
	return enr, nil
}

func (a *agent) logEnrollError(err error) {
	var ce *fleetclient.ClockError
	if errors.As(err, &ce) {
		a.log.Warn("enrollment waits for the clock", "err", err)
	} else {
		a.log.Warn("enrollment failed", "err", err)
	}
	a.record(err)
}

// enrollLoop retries enrollment with exponential backoff and jitter until it succeeds; nil
// when ctx ends first.
func (a *agent) enrollLoop(ctx context.Context) (*identity.Enrollment, error) {
	delay := a.cfg.MinBackoff
	for {
		if !retry.Sleep(ctx, retry.Jitter(delay)) {
			return nil, nil
		}
		enr, err := a.enroll(ctx)
		if err == nil {
			return enr, nil
		}
		if errors.Is(err, errCrash) || ctx.Err() != nil {
			return nil, errorsIfCrash(err)
		}
		a.logEnrollError(err)
		delay = min(2*delay, a.cfg.MaxBackoff)
	}
}

func errorsIfCrash(err error) error {
	if errors.Is(err, errCrash) {
		return err
	}
	return nil
}

func (a *agent) nodeStatus(ctx context.Context) (bool, []string, error) {
	if a.cfg.Node != nil {
		return a.cfg.Node(ctx)
	}
	cur, _ := k3s.LoadApplied(a.p)
	kc := a.p.Path(device.K3sKubeconfig)
	if cur != nil && cur.Role.Kind == api.RoleAgent {
		kc = filepath.Join(a.p.Path(device.K3sDataDir), "agent/kubelet.kubeconfig")
	}
	if _, err := os.Stat(kc); err != nil {
		return false, nil, nil // K3s has not written it yet
	}
	node := a.settings.Hostname
	if node == "" {
		node, _ = os.Hostname()
	}
	return heartbeat.Kube{Kubeconfig: kc, Node: node}.Status(ctx)
}

func (a *agent) heartbeatLoop(ctx context.Context) error {
	collector := heartbeat.Collector{Paths: a.p, Node: a.nodeStatus}
	for {
		a.beat(ctx, collector)
		if !retry.Sleep(ctx, a.interval) {
			return nil
		}
	}
}

// beat sends one heartbeat and acts on the answer.
func (a *agent) beat(ctx context.Context, collector heartbeat.Collector) {
	hb := api.Heartbeat{Version: a.cfg.Version, Slot: a.cfg.Slot}
	if cur, _ := k3s.LoadApplied(a.p); cur != nil {
		hb.Role = cur.Role.Kind
	}
	for _, err := range collector.Collect(ctx, &hb) {
		a.record(err)
	}
	hb.LastErrors = a.takeErrors()
	if a.updater != nil {
		hb.Update = a.updater.Status()
	}
	resp, err := a.client.Heartbeat(ctx, hb)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("heartbeat failed", "err", err)
		a.mu.Lock()
		a.errs = append(hb.LastErrors, a.errs...) // send them next time
		a.mu.Unlock()
		a.record(fmt.Errorf("heartbeat: %w", err))
		return
	}
	d := resp.Desired
	if a.updater != nil {
		// The answer is also the trial boot's proof that the fleet is reachable.
		a.updater.Desire(d.Version)
	}
	if d.Reset {
		a.log.Warn("the fleet ordered a reset")
		if err := Reset(ctx, a.p, a.cfg.Runner, false); err != nil {
			a.log.Error("reset", "err", err)
			a.record(err)
			return
		}
		enr, err := a.enroll(ctx)
		if err != nil {
			a.logEnrollError(err)
			if enr, err = a.enrollLoop(ctx); err != nil || enr == nil {
				return
			}
		}
		a.applyRole(ctx, enr.Role)
		return
	}
	if cur, _ := k3s.LoadApplied(a.p); cur == nil || cur.Provisional || !cur.Role.Equal(d.Role) {
		a.applyRole(ctx, d.Role)
	}
	a.renewIfDue(ctx)
}

// renewIfDue renews the certificate once two thirds of its lifetime have passed.
func (a *agent) renewIfDue(ctx context.Context) {
	c := a.cert.Load()
	if c == nil {
		return
	}
	life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
	if a.now().Before(c.Leaf.NotBefore.Add(life * 2 / 3)) {
		return
	}
	csr, err := identity.CSR(a.id, a.key)
	if err != nil {
		a.record(err)
		return
	}
	resp, err := a.client.Renew(ctx, csr)
	if err == nil {
		err = identity.SaveCertificate(a.p, a.key, []byte(resp.Certificate), []byte(resp.CA))
	}
	if err != nil {
		a.log.Warn("renewing the certificate", "err", err)
		a.record(fmt.Errorf("renewing the certificate: %w", err))
		return
	}
	if cert, _, err := identity.Certificate(a.p, a.key); err == nil && cert != nil {
		a.cert.Store(cert)
		a.client.CloseIdle()
		a.log.Info("certificate renewed", "until", cert.Leaf.NotAfter)
	}
}

// Reset is the factory reset of K3s: it stops K3s, removes its state, the role and the
// enrollment record. The device ID, key, certificate and imported settings stay, so the device
// enrolls again (with its certificate) on the next run. With identity, the key and
// certificate go too, and the next enrollment needs a token.
func Reset(ctx context.Context, p device.Paths, r k3s.Runner, withIdentity bool) error {
	if err := k3s.Reset(ctx, p, r); err != nil {
		return err
	}
	if err := identity.ClearEnrollment(p); err != nil {
		return err
	}
	if withIdentity {
		if err := os.RemoveAll(p.Path(device.IdentityDir)); err != nil {
			return fmt.Errorf("removing the identity: %w", err)
		}
	}
	return nil
}
