package cli

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeimg/edgeimg/fleet/loadtest"
	"github.com/edgeimg/edgeimg/fleet/pki"
)

func newCmdFleetLoadtest(f *fleetGlobals) *cobra.Command {
	var cfg loadtest.Config
	var db string
	var asJSON bool
	c := &cobra.Command{
		Use:   "loadtest [--devices N] [--rate R] [--spike X] [--duration D]",
		Short: "Simulate a fleet of devices against a fleet server on this machine and measure it",
		Long: `Simulate --devices devices: each enrolls (its own ed25519 key and CSR) and sends heartbeats over
its own mTLS connection, kept alive. Heartbeats go at --rate per second (default one every 30 s
per device) for --duration, then at --rate × --spike for --spike-duration. Prints throughput,
p50/p95/p99 latency, errors and the server's memory (from its /metrics) for each phase.

Without --server, a fleet server runs in this process on 127.0.0.1 with a fresh CA and the
database --db (default: a new SQLite file in a temporary directory); its memory figures then
include the generator's. With --server (loopback addresses only), the server must run with
--enroll-rate 0, and --admin-token and --ca (or ./admin-token, ./ca.pem) are used.

The generator runs with GOGC=400 unless GOGC is set, and collects its garbage between phases:
its 10,000 connections make a large heap, whose collection in the middle of a phase would
stall the generator, and its latency figures would no longer be the server's.`,
		Example: `  edgeimg fleet loadtest --devices 10000
  edgeimg fleet loadtest --db 'postgres://edgeimg:edgeimg@127.0.0.1:5432/fleet?sslmode=disable'
  edgeimg fleet serve --listen 127.0.0.1:8443 --enroll-rate 0 &
  edgeimg fleet loadtest --server https://127.0.0.1:8443`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			out := c.OutOrStdout()
			if os.Getenv("GOGC") == "" {
				// Ten thousand connections make a large, long-lived heap: collect it less often.
				debug.SetGCPercent(400)
			}
			cfg.Progress = func(s string) { fmt.Fprintln(c.ErrOrStderr(), s) }
			if cfg.Devices < 1 || cfg.Devices > loadtest.MaxDevices {
				return UsageError{fmt.Errorf("--devices %d: want 1 to %d", cfg.Devices, loadtest.MaxDevices)}
			}
			conns := cfg.Devices + 256
			if f.server == "" {
				if db != "" && !strings.HasPrefix(db, "postgres") {
					return UsageError{errors.New("--db: a postgres:// URL (the default is a temporary SQLite file)")}
				}
				dir, err := os.MkdirTemp("", "edgeimg-loadtest-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				conns *= 2 // both ends of every connection are in this process
				if err := raiseFileLimit(uint64(conns)); err != nil {
					return err
				}
				l, err := loadtest.StartLocal(ctx, dir, db)
				if err != nil {
					return err
				}
				defer l.Close()
				cfg.Server, cfg.CAPEM, cfg.AdminToken = l.URL, l.CAPEM, l.AdminToken
				fmt.Fprintf(c.ErrOrStderr(), "fleet server in this process at %s, database %s\n", l.URL, firstOf(redactDSN(db), "SQLite in "+dir))
			} else {
				if db != "" {
					return UsageError{errors.New("--db is for the in-process server; the server at --server has its own")}
				}
				if err := raiseFileLimit(uint64(conns)); err != nil {
					return err
				}
				cfg.Server = f.server
				cfg.AdminToken = firstOf(f.token, os.Getenv("EDGEIMG_ADMIN_TOKEN"))
				if cfg.AdminToken == "" {
					t, err := pki.ReadAdminToken(pki.AdminTokenFile)
					if err != nil {
						return UsageError{fmt.Errorf("no admin token: --admin-token, EDGEIMG_ADMIN_TOKEN or ./admin-token")}
					}
					cfg.AdminToken = t
				}
				ca, err := os.ReadFile(firstOf(f.ca, os.Getenv("EDGEIMG_FLEET_CA"), pki.CAFile))
				if err != nil {
					return fmt.Errorf("reading the fleet CA (--ca): %w", err)
				}
				cfg.CAPEM = ca
			}
			rep, err := loadtest.Run(ctx, cfg)
			if rep != nil {
				if asJSON {
					if jerr := writeJSON(out, rep); jerr != nil {
						return jerr
					}
				} else {
					fmt.Fprintf(out, "%d devices\n", rep.Devices)
					for _, p := range rep.Phases {
						fmt.Fprintln(out, p)
					}
				}
			}
			return err
		},
	}
	c.Flags().IntVar(&cfg.Devices, "devices", 10_000, "how many devices to simulate")
	c.Flags().Float64Var(&cfg.Rate, "rate", 0, "steady heartbeats per second (default devices/30: one every 30 s each)")
	c.Flags().Float64Var(&cfg.Spike, "spike", 15, "the spike's rate as a multiple of --rate")
	c.Flags().DurationVar(&cfg.Duration, "duration", 30*time.Second, "length of the steady phase")
	c.Flags().DurationVar(&cfg.SpikeDuration, "spike-duration", 10*time.Second, "length of the spike")
	c.Flags().IntVar(&cfg.EnrollWorkers, "enroll-workers", 32, "devices enrolling at a time")
	c.Flags().StringVar(&db, "db", "", "for the in-process server: a postgres:// URL (default: a temporary SQLite file)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return c
}

// raiseFileLimit raises the open-files limit to n if it is lower (every device holds a
// connection).
func raiseFileLimit(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("reading the open-files limit: %w", err)
	}
	if lim.Cur >= n {
		return nil
	}
	want := syscall.Rlimit{Cur: n, Max: max(lim.Max, n)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("the open-files limit is %d and the simulated devices need %d: raise it (ulimit -n) or simulate fewer devices: %w", lim.Cur, n, err)
	}
	return nil
}
