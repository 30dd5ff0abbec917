package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/client"
)

// Config describes a load test.
type Config struct {
	// Server is the fleet server's URL: it must be on a loopback address, and should run with
	// --enroll-rate 0 (all simulated devices enroll from one address).
	Server string
	// CAPEM is the fleet CA; AdminToken the admin token (to create the enrollment token).
	CAPEM      []byte
	AdminToken string
	// Devices is how many devices are simulated. Default 10,000.
	Devices int
	// Rate is the steady heartbeat rate, per second. Default Devices/30 (one every 30 s each).
	Rate float64
	// Spike multiplies Rate during the spike phase. Default 15.
	Spike float64
	// Duration is the steady phase's length. Default 30 s.
	Duration time.Duration
	// SpikeDuration is the spike phase's length. Default 10 s.
	SpikeDuration time.Duration
	// EnrollWorkers is how many devices enroll at a time. Default 32.
	EnrollWorkers int
	// Progress, when set, is told what happens (one line each); it must be safe to call from
	// several goroutines.
	Progress func(string)
}

func (c *Config) setDefaults() {
	if c.Devices == 0 {
		c.Devices = 10_000
	}
	if c.Rate == 0 {
		c.Rate = float64(c.Devices) / 30
	}
	if c.Spike == 0 {
		c.Spike = 15
	}
	if c.Duration == 0 {
		c.Duration = 30 * time.Second
	}
	if c.SpikeDuration == 0 {
		c.SpikeDuration = 10 * time.Second
	}
	if c.EnrollWorkers == 0 {
		c.EnrollWorkers = 32
	}
	if c.Progress == nil {
		c.Progress = func(string) {}
	}
}

// Bounds keep a load test from running away.
const (
	MaxDevices  = 100_000
	MaxDuration = 10 * time.Minute
	MaxRate     = 100_000
)

func (c *Config) validate() error {
	u, err := url.Parse(c.Server)
	if err != nil || u.Scheme != "https" {
		return fmt.Errorf("server %q: want https://127.0.0.1:PORT", c.Server)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); !(host == "localhost" || ip != nil && ip.IsLoopback()) {
		return fmt.Errorf("server %q: a load test only runs against a loopback address", c.Server)
	}
	switch {
	case c.Devices < 1 || c.Devices > MaxDevices:
		return fmt.Errorf("devices: %d, want 1 to %d", c.Devices, MaxDevices)
	case c.Rate <= 0 || c.Rate*c.Spike > MaxRate || c.Spike < 1:
		return fmt.Errorf("rate %g × spike %g: want a positive rate, a spike of at least 1, at most %d/s", c.Rate, c.Spike, MaxRate)
	case c.Duration < 0 || c.SpikeDuration < 0 || c.Duration+c.SpikeDuration > MaxDuration:
		return fmt.Errorf("durations %s + %s: at most %s", c.Duration, c.SpikeDuration, MaxDuration)
	case c.AdminToken == "":
		return errors.New("no admin token")
	}
	return nil
}

// Phase is what one phase measured.
type Phase struct {
	Name string `json:"name"`
	// Target is the rate asked for (requests per second); 0 for enrollment (as fast as it goes).
	Target float64 `json:"target_per_second"`
	// Requests were sent, OK answered 200; Errors counts the others by status or error.
	Requests int            `json:"requests"`
	OK       int            `json:"ok"`
	Errors   map[string]int `json:"errors,omitempty"`
	// Late counts requests sent more than 10 ms after their schedule (the generator or the
	// device's previous request was slow).
	Late       int           `json:"late"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	Throughput float64       `json:"throughput_per_second"` // OK answers per second
	P50        time.Duration `json:"p50_ns"`
	P95        time.Duration `json:"p95_ns"`
	P99        time.Duration `json:"p99_ns"`
	Max        time.Duration `json:"max_ns"`
	// ServerRSS and ServerHeap are the largest process_resident_memory_bytes and
	// go_memstats_heap_inuse_bytes the server's /metrics showed during the phase.
	ServerRSS  uint64 `json:"server_rss_bytes"`
	ServerHeap uint64 `json:"server_heap_inuse_bytes"`
}

// Report is the result of a load test.
type Report struct {
	Devices int      `json:"devices"`
	Phases  []*Phase `json:"phases"`
}

type device struct {
	id     string
	url    string // of the heartbeat route
	client *http.Client
	body   []byte
}

type sample struct {
	lat  time.Duration
	code string // "" for 200
	late bool
}

// Run enrolls cfg.Devices simulated devices (an ed25519 key and CSR each, then a first
// heartbeat on the device's own mTLS connection, kept alive like a device's), then sends
// heartbeats at cfg.Rate for cfg.Duration and at cfg.Rate×cfg.Spike for cfg.SpikeDuration.
// Each device has one connection and one request in flight at most; the requests of a phase
// are spread evenly over time and devices (device i at phase start + i/rate, then every
// devices/rate). Latency is measured from sending to the whole answer.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.CAPEM) {
		return nil, errors.New("the fleet CA holds no PEM certificate")
	}
	admin, err := client.NewAdmin(cfg.Server, cfg.AdminToken, cfg.CAPEM)
	if err != nil {
		return nil, err
	}
	tok, err := admin.CreateToken(ctx, api.TokenCreateRequest{TTLSeconds: 3600, Uses: cfg.Devices, Labels: map[string]string{"loadtest": "yes"}})
	if err != nil {
		return nil, fmt.Errorf("creating the enrollment token: %w", err)
	}
	mem := newMemWatch(cfg.Server, pool)
	defer mem.stop()
	rep := &Report{Devices: cfg.Devices}

	// 1. Enrollment, and each device's first heartbeat (which opens its mTLS connection).
	cfg.Progress(fmt.Sprintf("enrolling %d devices", cfg.Devices))
	mem.phase()
	devs, enroll, err := enrollAll(ctx, cfg, pool, tok.Token)
	enroll.ServerRSS, enroll.ServerHeap = mem.phase()
	rep.Phases = append(rep.Phases, enroll)
	if err != nil {
		return rep, err
	}
	defer func() {
		for _, d := range devs {
			d.client.CloseIdleConnections()
		}
	}()
	cfg.Progress(enroll.String())

	// 2. Steady heartbeats, 3. the spike.
	for _, ph := range []struct {
		name string
		rate float64
		d    time.Duration
	}{{"steady", cfg.Rate, cfg.Duration}, {"spike", cfg.Rate * cfg.Spike, cfg.SpikeDuration}} {
		if ph.d == 0 {
			continue
		}
		cfg.Progress(fmt.Sprintf("%s: %.0f heartbeats/s for %s", ph.name, ph.rate, ph.d))
		// The generator's own garbage collection is not the server's latency: collect now,
		// between phases, so that the phase starts with a fresh heap (a collection of the
		// generator's ~250 MiB live heap in the middle of the spike stalled it for 200 ms).
		runtime.GC()
		p := heartbeats(ctx, devs, ph.name, ph.rate, ph.d)
		p.ServerRSS, p.ServerHeap = mem.phase()
		rep.Phases = append(rep.Phases, p)
		cfg.Progress(p.String())
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func csr(id string, key ed25519.PrivateKey) (string, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

func transport(pool *x509.CertPool, cert *tls.Certificate, conns int) *http.Transport {
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	return &http.Transport{TLSClientConfig: conf, MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		IdleConnTimeout: 10 * time.Minute, TLSHandshakeTimeout: 30 * time.Second, DisableCompression: true}
}

// do posts body and returns how it went: "" for 200, else the status or the error.
func do(ctx context.Context, c *http.Client, u string, body []byte, out any) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return "request: " + err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "canceled"
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "timeout"
		}
		return "transport: " + shortErr(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "reading: " + shortErr(err)
	}
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		_ = json.Unmarshal(data, &e)
		return strconv.Itoa(resp.StatusCode) + " " + e.Code
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return "decoding: " + shortErr(err)
		}
	}
	return ""
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

func enrollAll(ctx context.Context, cfg Config, pool *x509.CertPool, token string) ([]*device, *Phase, error) {
	enrollClient := &http.Client{Transport: transport(pool, nil, cfg.EnrollWorkers), Timeout: 60 * time.Second}
	defer enrollClient.CloseIdleConnections()
	hb, _ := json.Marshal(api.Heartbeat{Version: "v1.0.0", Slot: "a", Role: api.RoleServer, UptimeSeconds: 3600, NodeReady: true,
		MemUsed: 900 << 20, MemTotal: 4 << 30, DiskUsed: 3 << 30, DiskTotal: 28 << 30})
	devs := make([]*device, cfg.Devices)
	samples := make([]sample, cfg.Devices)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range min(cfg.EnrollWorkers, cfg.Devices) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Devices || ctx.Err() != nil {
					return
				}
				d, s := enrollOne(ctx, cfg.Server, pool, enrollClient, token, i, hb)
				devs[i], samples[i] = d, s
				if done := i + 1; done%1000 == 0 {
					cfg.Progress(fmt.Sprintf("  %d enrolled", done))
				}
			}
		})
	}
	wg.Wait()
	p := summarize("enroll", 0, time.Since(start), samples)
	var ok []*device
	for _, d := range devs {
		if d != nil {
			ok = append(ok, d)
		}
	}
	if len(ok) == 0 {
		return nil, p, fmt.Errorf("no device enrolled: %v", p.Errors)
	}
	return ok, p, ctx.Err()
}

// enrollOne enrolls device i and sends its first heartbeat; the sample times both.
func enrollOne(ctx context.Context, server string, pool *x509.CertPool, c *http.Client, token string, i int, hb []byte) (*device, sample) {
	id := fmt.Sprintf("loadtest-%06d", i)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	req, err := csr(id, key)
	if err != nil {
		return nil, sample{code: "csr: " + err.Error()}
	}
	body, _ := json.Marshal(api.EnrollRequest{Token: token, DeviceID: id, CSR: req, Hostname: fmt.Sprintf("truck-%06d", i),
		Labels: map[string]string{"fleet": "trucks", "depot": "d" + strconv.Itoa(i%20)}, Version: "v1.0.0", Slot: "a"})
	t0 := time.Now()
	var out api.EnrollResponse
	if code := do(ctx, c, server+api.PathEnroll, body, &out); code != "" {
		return nil, sample{lat: time.Since(t0), code: code}
	}
	block, _ := pem.Decode([]byte(out.Certificate))
	if block == nil {
		return nil, sample{lat: time.Since(t0), code: "no certificate"}
	}
	cert := &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
	d := &device{id: id, url: server + api.PathHeartbeat, client: &http.Client{Transport: transport(pool, cert, 1), Timeout: 30 * time.Second}, body: hb}
	code := do(ctx, d.client, d.url, hb, nil)
	return d, sample{lat: time.Since(t0), code: code}
}

// heartbeats runs one phase: device i sends at start + i/rate + k·len(devs)/rate.
func heartbeats(ctx context.Context, devs []*device, name string, rate float64, dur time.Duration) *Phase {
	n := len(devs)
	period := time.Duration(float64(n) / rate * float64(time.Second))
	start := time.Now().Add(50 * time.Millisecond)
	end := start.Add(dur)
	results := make([][]sample, n)
	var wg sync.WaitGroup
	for i, d := range devs {
		offset := time.Duration(float64(i) / rate * float64(time.Second))
		wg.Go(func() {
			var out []sample
			for k := 0; ; k++ {
				at := start.Add(offset + time.Duration(k)*period)
				if !at.Before(end) || ctx.Err() != nil {
					break
				}
				if w := time.Until(at); w > 0 {
					t := time.NewTimer(w)
					select {
					case <-t.C:
					case <-ctx.Done():
						t.Stop()
					}
				}
				if ctx.Err() != nil {
					break
				}
				t0 := time.Now()
				code := do(ctx, d.client, d.url, d.body, nil)
				out = append(out, sample{lat: time.Since(t0), code: code, late: t0.Sub(at) > 10*time.Millisecond})
			}
			results[i] = out
		})
	}
	wg.Wait()
	return summarize(name, rate, max(time.Since(start), dur), slices.Concat(results...))
}

func summarize(name string, target float64, elapsed time.Duration, samples []sample) *Phase {
	p := &Phase{Name: name, Target: target, Requests: len(samples), Elapsed: elapsed, Errors: map[string]int{}}
	lats := make([]time.Duration, 0, len(samples))
	for _, s := range samples {
		if s.code != "" {
			p.Errors[s.code]++
		} else {
			p.OK++
		}
		if s.late {
			p.Late++
		}
		lats = append(lats, s.lat)
	}
	if len(p.Errors) == 0 {
		p.Errors = nil
	}
	slices.Sort(lats)
	pct := func(q float64) time.Duration {
		if len(lats) == 0 {
			return 0
		}
		return lats[min(len(lats)-1, int(math.Ceil(q*float64(len(lats))))-1)]
	}
	p.P50, p.P95, p.P99 = pct(.50), pct(.95), pct(.99)
	if len(lats) > 0 {
		p.Max = lats[len(lats)-1]
	}
	if elapsed > 0 {
		p.Throughput = float64(p.OK) / elapsed.Seconds()
	}
	return p
}

// String is a one-line summary.
func (p *Phase) String() string {
	target := ""
	if p.Target > 0 {
		target = fmt.Sprintf(" (target %.0f/s)", p.Target)
	}
	s := fmt.Sprintf("%-7s %7d requests in %6.1fs: %7.0f ok/s%s, p50 %s, p95 %s, p99 %s, max %s, %d late, server RSS %d MiB, heap %d MiB",
		p.Name, p.Requests, p.Elapsed.Seconds(), p.Throughput, target, ms(p.P50), ms(p.P95), ms(p.P99), ms(p.Max), p.Late, p.ServerRSS>>20, p.ServerHeap>>20)
	if len(p.Errors) > 0 {
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range p.Errors {
				if !yield(k) {
					return
				}
			}
		})
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s ×%d", k, p.Errors[k]))
		}
		s += "; errors: " + strings.Join(parts, ", ")
	}
	return s
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + "ms" }

// memWatch polls the server's /metrics for its memory.
type memWatch struct {
	mu        sync.Mutex
	rss, heap uint64
	done      chan struct{}
	wg        sync.WaitGroup
}

func newMemWatch(server string, pool *x509.CertPool) *memWatch {
	m := &memWatch{done: make(chan struct{})}
	c := &http.Client{Transport: transport(pool, nil, 1), Timeout: 5 * time.Second}
	m.wg.Go(func() {
		defer c.CloseIdleConnections()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, heap, err := scrape(c, server+"/metrics"); err == nil {
				m.mu.Lock()
				m.rss, m.heap = max(m.rss, rss), max(m.heap, heap)
				m.mu.Unlock()
			}
			select {
			case <-m.done:
				return
			case <-t.C:
			}
		}
	})
	return m
}

// phase returns the largest figures since the last call, and starts over.
func (m *memWatch) phase() (rss, heap uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rss, heap = m.rss, m.heap
	m.rss, m.heap = 0, 0
	return rss, heap
}

func (m *memWatch) stop() { close(m.done); m.wg.Wait() }

func scrape(c *http.Client, u string) (rss, heap uint64, err error) {
	resp, err := c.Get(u)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		f, perr := strconv.ParseFloat(val, 64)
		if perr != nil {
			continue
		}
		switch name {
		case "process_resident_memory_bytes":
			rss = uint64(f)
		case "go_memstats_heap_inuse_bytes":
			heap = uint64(f)
		}
	}
	return rss, heap, sc.Err()
}
