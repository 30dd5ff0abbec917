package cli

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/edgeimg/edgeimg/fleet"
	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/client"
	"github.com/edgeimg/edgeimg/fleet/pki"
	"github.com/edgeimg/edgeimg/fleet/store"
	"github.com/edgeimg/edgeimg/ota/bundle"
)

// fleetGlobals are the flags that commands calling the fleet's admin API share (`edgeimg
// fleet …`, `edgeimg release …`).
type fleetGlobals struct {
	*globals
	serverFlag string // the name of the server URL flag: server or fleet
	server     string
	token      string
	ca         string
}

// addFlags registers the server URL flag as --NAME, --admin-token and --ca on fs.
func (f *fleetGlobals) addFlags(fs *pflag.FlagSet, name string) {
	f.serverFlag = name
	fs.StringVar(&f.server, name, "", "fleet server URL for admin commands (default $EDGEIMG_FLEET_URL)")
	fs.StringVar(&f.token, "admin-token", "", "admin token (default $EDGEIMG_ADMIN_TOKEN, else ./admin-token)")
	fs.StringVar(&f.ca, "ca", "", "fleet CA to trust (default $EDGEIMG_FLEET_CA, else ./ca.pem if present, else the system's roots)")
}

func (f *fleetGlobals) admin() (*client.Admin, error) {
	server := firstOf(f.server, os.Getenv("EDGEIMG_FLEET_URL"))
	if server == "" {
		return nil, UsageError{fmt.Errorf("no fleet server: --%s URL or EDGEIMG_FLEET_URL", f.serverFlag)}
	}
	token := firstOf(f.token, os.Getenv("EDGEIMG_ADMIN_TOKEN"))
	if token == "" {
		if b, err := os.ReadFile(pki.AdminTokenFile); err == nil {
			token = strings.TrimSpace(string(b))
		}
	}
	if token == "" {
		return nil, UsageError{errors.New("no admin token: --admin-token, EDGEIMG_ADMIN_TOKEN or ./admin-token")}
	}
	caFile := firstOf(f.ca, os.Getenv("EDGEIMG_FLEET_CA"))
	var caPEM []byte
	if caFile == "" {
		caPEM, _ = os.ReadFile(pki.CAFile) // ./ca.pem when run in the fleet's directory
	} else {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the fleet CA: %w", err)
		}
		caPEM = b
	}
	return client.NewAdmin(server, token, caPEM)
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// NewCmdFleet returns `edgeimg fleet` and its subcommands.
// adminCall calls the fleet's admin API (the server and credential of the fleet flags) and
// prints what it returns: as JSON with --json, else as text.
func adminCall[T any](c *cobra.Command, f *fleetGlobals, asJSON bool, call func(context.Context, *client.Admin) (T, error), text func(io.Writer, T) error) error {
	a, err := f.admin()
	if err != nil {
		return err
	}
	v, err := call(c.Context(), a)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(c.OutOrStdout(), v)
	}
	return text(c.OutOrStdout(), v)
}

// jsonFlag adds --json to c.
func jsonFlag(c *cobra.Command, asJSON *bool) { c.Flags().BoolVar(asJSON, "json", false, "print JSON") }

func NewCmdFleet(g *globals) *cobra.Command {
	f := &fleetGlobals{globals: g}
	c := &cobra.Command{
		Use:   "fleet",
		Short: "Run and administer the fleet server that devices enroll with",
		Example: `  edgeimg fleet init --san fleet.example.com
  edgeimg fleet serve --listen :8443
  export EDGEIMG_FLEET_URL=https://fleet.example.com:8443 EDGEIMG_ADMIN_TOKEN=$(cat admin-token)
  edgeimg fleet token create --ttl 24h --uses 100 --label site=berlin
  edgeimg fleet token revoke 3f2a9c0d1e7b
  edgeimg fleet device list --label site=berlin
  edgeimg fleet device role 10000000c0ffee42 --agent-of https://10.0.0.5:6443 --k3s-token-file node-token --reset
  edgeimg fleet device revoke 10000000c0ffee42`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	f.addFlags(c.PersistentFlags(), "server")
	token := &cobra.Command{Use: "token", Short: "Create, list and revoke enrollment tokens", Args: cobra.NoArgs, RunE: func(c *cobra.Command, _ []string) error { return c.Help() }}
	token.AddCommand(newCmdTokenCreate(f), newCmdTokenList(f), newCmdTokenRevoke(f))
	dev := &cobra.Command{Use: "device", Short: "List, show, label, revoke and reset devices, and change their K3s role", Args: cobra.NoArgs, RunE: func(c *cobra.Command, _ []string) error { return c.Help() }}
	dev.AddCommand(newCmdDeviceList(f), newCmdDeviceShow(f), newCmdDeviceLabel(f), newCmdDeviceAction(f, "revoke"), newCmdDeviceAction(f, "reset"), newCmdDeviceRole(f))
	c.AddCommand(newCmdFleetInit(), newCmdFleetServe(g), token, dev, newCmdFleetLoadtest(f), newCmdFleetDashboard(f))
	return c
}

func newCmdFleetInit() *cobra.Command {
	var sans []string
	var dir string
	c := &cobra.Command{
		Use:   "init [--san HOST]...",
		Short: "Create the fleet CA, the server certificate and the admin token in the current directory",
		Long: `Create ca.pem (bake it into images: the spec's fleet.ca), ca-key.pem, server.pem and
server-key.pem (for the names given with --san, and localhost) and admin-token. Keys and the
token are written 0600. Existing files are never overwritten.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := pki.Init(dir, sans, time.Now()); err != nil {
				return err
			}
			_, err := fmt.Fprintf(c.OutOrStdout(), "wrote %s, %s, %s, %s and %s in %s\n", pki.CAFile, pki.CAKeyFile, pki.ServerFile, pki.ServerKeyFile, pki.AdminTokenFile, dir)
			return err
		},
	}
	c.Flags().StringSliceVar(&sans, "san", nil, "DNS name or IP address the server is reached at (repeatable)")
	c.Flags().StringVar(&dir, "dir", ".", "directory to write the files in")
	return c
}

func newCmdFleetServe(g *globals) *cobra.Command {
	var listen, db, publicURL, dir, releaseDir, pprofAddr string
	var trustedKeys []string
	var enrollRate float64
	var heartbeat time.Duration
	c := &cobra.Command{
		Use:   "serve --listen ADDR [--db URL] [--public-url URL]",
		Short: "Run the fleet server (HTTPS API, /metrics, /healthz)",
		Long: `Run the fleet server with the CA, server certificate and admin token made by fleet init.
--db is a SQLite file (default fleet.db in --dir) or a postgres:// URL (several servers may
share one PostgreSQL database). Releases pushed with edgeimg release push are stored in
--releases (default releases/ in --dir) and must be signed by a --trusted-key.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if listen == "" {
				return UsageError{errors.New("--listen is required, e.g. --listen :8443")}
			}
			if db == "" {
				db = filepath.Join(dir, "fleet.db")
			}
			ca, err := pki.LoadCA(filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile))
			if err != nil {
				return err
			}
			tlsConf, err := pki.ServerTLSConfig(ca, filepath.Join(dir, pki.ServerFile), filepath.Join(dir, pki.ServerKeyFile))
			if err != nil {
				return err
			}
			adminToken, err := pki.ReadAdminToken(filepath.Join(dir, pki.AdminTokenFile))
			if err != nil {
				return err
			}
			if releaseDir == "" {
				releaseDir = filepath.Join(dir, "releases")
			}
			keys, err := readTrustedKeys(trustedKeys)
			if err != nil {
				return err
			}
			ctx := c.Context()
			st, err := store.Open(ctx, db)
			if err != nil {
				return fmt.Errorf("opening the store: %w", err)
			}
			defer st.Close()
			log := slog.New(slog.NewTextHandler(c.ErrOrStderr(), nil))
			h := fleet.NewServer(st, ca, fleet.WithAdminToken(adminToken), fleet.WithLogger(log), fleet.WithPublicURL(publicURL),
				fleet.WithEnrollRate(enrollRate, 20), fleet.WithHeartbeatInterval(heartbeat),
				fleet.WithReleaseDir(releaseDir), fleet.WithTrustedKeys(keys))
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: h, TLSConfig: tlsConf, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
				WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
			if pprofAddr != "" {
				pl, err := profileListener(pprofAddr)
				if err != nil {
					return err
				}
				go (&http.Server{Handler: profileHandler(), ReadHeaderTimeout: 10 * time.Second}).Serve(pl)
				log.Info("Go profiles (net/http/pprof)", "url", "http://"+pl.Addr().String()+"/debug/pprof/")
			}
			go h.RunRollouts(ctx)
			// On SIGTERM (a rollout or scale-down) requests in flight get 10 s to finish:
			// Shutdown stops accepting at once, and serve returns only when it is done.
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}()
			fmt.Fprintf(c.OutOrStdout(), "fleet server on https://%s (database %s)\n", l.Addr(), redactDSN(db))
			if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			<-stopped
			return nil
		},
	}
	c.Flags().StringVar(&listen, "listen", "", "address to listen on, e.g. :8443")
	c.Flags().StringVar(&db, "db", "", "database: a SQLite file or postgres://… (default fleet.db in --dir)")
	c.Flags().StringVar(&publicURL, "public-url", "", "URL devices and people reach the server at")
	c.Flags().StringVar(&dir, "dir", ".", "directory holding the files of fleet init")
	c.Flags().StringVar(&pprofAddr, "pprof", "", "serve Go's profiles (net/http/pprof) on this loopback address, e.g. 127.0.0.1:6060")
	c.Flags().Float64Var(&enrollRate, "enroll-rate", 2, "enrollments per second allowed per source IP (bursts of 20; 0: no limit)")
	c.Flags().DurationVar(&heartbeat, "heartbeat", 30*time.Second, "heartbeat interval told to devices")
	c.Flags().StringVar(&releaseDir, "releases", "", "directory to store pushed releases in (default releases/ in --dir)")
	c.Flags().StringArrayVar(&trustedKeys, "trusted-key", nil, "public key (PEM, from edgeimg keys create) a pushed release must be signed with (repeatable; none: pushes are refused)")
	return c
}

// readTrustedKeys reads the public key files of --trusted-key.
func readTrustedKeys(paths []string) (bundle.Keyring, error) {
	var pubs []ed25519.PublicKey
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("--trusted-key: %w", err)
		}
		pk, err := bundle.ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("--trusted-key %s: %w", p, err)
		}
		pubs = append(pubs, pk)
	}
	return bundle.NewKeyring(pubs...), nil
}

func redactDSN(db string) string {
	if i := strings.Index(db, "@"); i > 0 && strings.Contains(db[:i], "://") {
		return db[:strings.Index(db, "://")+3] + "…" + db[i:]
	}
	return db
}

func parseLabels(args []string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, UsageError{fmt.Errorf("label %q: want KEY=VALUE", a)}
		}
		out[k] = v
	}
	return out, nil
}

func newCmdTokenCreate(f *fleetGlobals) *cobra.Command {
	var ttl time.Duration
	var uses int
	var labels []string
	var role, joinURL, joinToken string
	var asJSON bool
	c := &cobra.Command{
		Use:   "create --ttl 24h --uses 100 [--label KEY=VALUE]...",
		Short: "Create an enrollment token (shown once; the server keeps only its hash)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			lm, err := parseLabels(labels)
			if err != nil {
				return err
			}
			req := api.TokenCreateRequest{TTLSeconds: int64(ttl / time.Second), Uses: uses, Labels: lm}
			switch role {
			case "", api.RoleServer:
			case api.RoleAgent:
				req.Role = &api.Role{Kind: api.RoleAgent, ServerURL: joinURL, Token: joinToken}
			default:
				return UsageError{fmt.Errorf("--role %q: server or agent", role)}
			}
			if err := req.Validate(); err != nil {
				return UsageError{err}
			}
			return adminCall(c, f, asJSON, func(ctx context.Context, a *client.Admin) (*api.TokenCreateResponse, error) {
				return a.CreateToken(ctx, req)
			},
				func(w io.Writer, tok *api.TokenCreateResponse) error {
					_, err := fmt.Fprintf(w, "%s\n", tok.Token)
					fmt.Fprintf(c.ErrOrStderr(), "token %s: %d uses until %s; put it in edgeimg/device.yaml (token:) or use edgeimg personalize --token\n", tok.Info.ID, tok.Info.Uses, tok.Info.ExpiresAt.Format(time.RFC3339))
					return err
				})
		},
	}
	c.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	c.Flags().IntVar(&uses, "uses", 1, "how many devices may enroll with it")
	c.Flags().StringArrayVar(&labels, "label", nil, "label for the devices enrolled with it, KEY=VALUE (repeatable)")
	c.Flags().StringVar(&role, "role", "server", "K3s role of the devices: server (standalone) or agent")
	c.Flags().StringVar(&joinURL, "join-url", "", "for --role agent: the K3s server to join, https://HOST:6443")
	c.Flags().StringVar(&joinToken, "join-token", "", "for --role agent: the K3s join token")
	jsonFlag(c, &asJSON)
	return c
}

func newCmdTokenList(f *fleetGlobals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List enrollment tokens",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, f, asJSON, func(ctx context.Context, a *client.Admin) ([]api.TokenInfo, error) { return a.Tokens(ctx) }, func(w io.Writer, toks []api.TokenInfo) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSTATE\tUSES LEFT\tEXPIRES\tROLE\tLABELS")
				now := time.Now()
				for _, t := range toks {
					fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%s\n", t.ID, tokenState(t, now), t.UsesLeft, t.Uses, t.ExpiresAt.Format(time.RFC3339), t.Role, labelString(t.Labels))
				}
				return tw.Flush()
			})
		},
	}
	jsonFlag(c, &asJSON)
	return c
}

// tokenState says whether a token can enroll devices at now: valid, revoked (with the time),
// expired or used-up.
func tokenState(t api.TokenInfo, now time.Time) string {
	switch {
	case !t.RevokedAt.IsZero():
		return "revoked " + t.RevokedAt.Format(time.RFC3339)
	case !now.Before(t.ExpiresAt):
		return "expired"
	case t.UsesLeft <= 0:
		return "used-up"
	}
	return "valid"
}

func newCmdTokenRevoke(f *fleetGlobals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an enrollment token (ID as token list shows it): it enrolls no more devices; those enrolled with it keep working",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return adminCall(c, f, asJSON, func(ctx context.Context, a *client.Admin) (*api.TokenInfo, error) { return a.RevokeToken(ctx, args[0]) },
				func(w io.Writer, t *api.TokenInfo) error {
					_, err := fmt.Fprintf(w, "token %s: revoked at %s (%d of %d uses left unused)\n", t.ID, t.RevokedAt.Format(time.RFC3339), t.UsesLeft, t.Uses)
					return err
				})
		},
	}
	jsonFlag(c, &asJSON)
	return c
}

func labelString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func newCmdDeviceList(f *fleetGlobals) *cobra.Command {
	var state string
	var labels []string
	var asJSON bool
	c := &cobra.Command{
		Use:   "list [--state STATE] [--label KEY=VALUE]...",
		Short: "List devices",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			lm, err := parseLabels(labels)
			if err != nil {
				return err
			}
			return adminCall(c, f, asJSON, func(ctx context.Context, a *client.Admin) ([]api.Device, error) { return a.Devices(ctx, state, lm) }, deviceTable)
		},
	}
	c.Flags().StringVar(&state, "state", "", "only devices in this state: active, reset or revoked")
	c.Flags().StringArrayVar(&labels, "label", nil, "only devices with this label, KEY=VALUE (repeatable)")
	jsonFlag(c, &asJSON)
	return c
}

func deviceTable(w io.Writer, devs []api.Device) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOSTNAME\tSTATE\tROLE\tVERSION\tSLOT\tLAST SEEN\tLABELS")
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Hostname, d.State, d.Role, d.Version, d.Slot, ago(d.LastSeen), labelString(d.Labels))
	}
	return tw.Flush()
}

func newCmdDeviceShow(f *fleetGlobals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show ID",
		Short: "Show a device, its last heartbeat and its history",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return adminCall(c, f, asJSON, func(ctx context.Context, a *client.Admin) (*api.DeviceDetail, error) { return a.Device(ctx, args[0]) }, deviceDetail)
		},
	}
	jsonFlag(c, &asJSON)
	return c
}

// deviceDetail prints a device, its last heartbeat and its history.
func deviceDetail(w io.Writer, d *api.DeviceDetail) error {
	dev := d.Device
	fmt.Fprintf(w, "ID:           %s\nHostname:     %s\nState:        %s\nRole:         %s\nLabels:       %s\nVersion:      %s (slot %s)\nEnrolled:     %s\nLast seen:    %s\nCertificate:  %s, until %s\n",
		dev.ID, dev.Hostname, dev.State, dev.Role, labelString(dev.Labels), dev.Version, dev.Slot, dev.EnrolledAt.Format(time.RFC3339), ago(dev.LastSeen), dev.CertSerial, dev.CertNotAfter.Format(time.RFC3339))
	if hb := dev.LastHeartbeat; hb != nil {
		fmt.Fprintf(w, "Node ready:   %v\nMemory:       %d / %d MiB\nDisk:         %d / %d MiB\nUptime:       %s\n",
			hb.NodeReady, hb.MemUsed>>20, hb.MemTotal>>20, hb.DiskUsed>>20, hb.DiskTotal>>20, time.Duration(hb.UptimeSeconds)*time.Second)
		if len(hb.NotReadyPods) > 0 {
			fmt.Fprintf(w, "Not ready:    %s\n", strings.Join(hb.NotReadyPods, ", "))
		}
		for _, e := range hb.LastErrors {
			fmt.Fprintf(w, "Error:        %s\n", e)
		}
	}
	fmt.Fprintln(w, "History:")
	for _, e := range d.Events {
		fmt.Fprintf(w, "  %s  %s  %s\n", e.At.Format(time.RFC3339), e.Kind, e.Detail)
	}
	return nil
}

func newCmdDeviceLabel(f *fleetGlobals) *cobra.Command {
	c := &cobra.Command{
		Use:   "label ID KEY=VALUE|KEY-...",
		Short: "Set (KEY=VALUE) or remove (KEY-) labels of a device",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			req := api.LabelRequest{Set: map[string]string{}}
			for _, a := range args[1:] {
				if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
					req.Remove = append(req.Remove, k)
					continue
				}
				k, v, ok := strings.Cut(a, "=")
				if !ok {
					return UsageError{fmt.Errorf("%q: want KEY=VALUE or KEY-", a)}
				}
				req.Set[k] = v
			}
			if err := req.Validate(); err != nil {
				return UsageError{err}
			}
			return adminCall(c, f, false, func(ctx context.Context, a *client.Admin) (*api.Device, error) { return a.Label(ctx, args[0], req) },
				func(w io.Writer, d *api.Device) error {
					_, err := fmt.Fprintf(w, "%s: %s\n", d.ID, labelString(d.Labels))
					return err
				})
		},
	}
	return c
}

func newCmdDeviceAction(f *fleetGlobals, action string) *cobra.Command {
	short := map[string]string{
		"revoke": "Revoke a device: its certificate stops working at once and it cannot enroll again",
		"reset":  "Order a factory reset of a device's K3s and role; it then enrolls again",
	}[action]
	return &cobra.Command{
		Use:   action + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			do := (*client.Admin).Revoke
			if action == "reset" {
				do = (*client.Admin).Reset
			}
			return adminCall(c, f, false, func(ctx context.Context, a *client.Admin) (*api.Device, error) { return do(a, ctx, args[0]) },
				func(w io.Writer, d *api.Device) error {
					_, err := fmt.Fprintf(w, "%s: %s\n", d.ID, d.State)
					return err
				})
		},
	}
}

// deviceRoleOptions are the flags of `fleet device role`.
type deviceRoleOptions struct {
	server       bool
	agentOf      string
	k3sToken     string
	k3sTokenFile string
	reset        bool
	tokenFromEnv string // $EDGEIMG_K3S_TOKEN, set by RunE before Validate
}

// envK3sToken is the environment variable the K3s join token of `fleet device role` may come from.
const envK3sToken = "EDGEIMG_K3S_TOKEN"

func (o *deviceRoleOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.server, "server", false, "make the device a standalone K3s server")
	fs.StringVar(&o.agentOf, "agent-of", "", "make the device a K3s agent of this server, https://HOST:6443")
	fs.StringVar(&o.k3sToken, "k3s-token", "", "with --agent-of: the K3s join token (default $"+envK3sToken+")")
	fs.StringVar(&o.k3sTokenFile, "k3s-token-file", "", "with --agent-of: a file holding the K3s join token (e.g. the server's /var/lib/rancher/k3s/server/node-token)")
	fs.BoolVar(&o.reset, "reset", false, "also order a factory reset of the device's K3s, so that the change goes through on a node whose K3s has state")
}

// Validate checks the flags and returns the role they ask for; errors are UsageErrors.
func (o *deviceRoleOptions) Validate() (api.Role, error) {
	switch {
	case o.server && o.agentOf != "":
		return api.Role{}, UsageError{errors.New("--server and --agent-of contradict each other: give one")}
	case !o.server && o.agentOf == "":
		return api.Role{}, UsageError{errors.New("no role: give --server, or --agent-of https://HOST:6443 with --k3s-token or --k3s-token-file")}
	case o.server && (o.k3sToken != "" || o.k3sTokenFile != ""):
		return api.Role{}, UsageError{errors.New("--k3s-token and --k3s-token-file go with --agent-of, not --server")}
	case o.k3sToken != "" && o.k3sTokenFile != "":
		return api.Role{}, UsageError{errors.New("--k3s-token and --k3s-token-file contradict each other: give one")}
	}
	if o.server {
		return api.Role{Kind: api.RoleServer}, nil
	}
	token := o.k3sToken
	switch {
	case o.k3sTokenFile != "":
		b, err := os.ReadFile(o.k3sTokenFile)
		if err != nil {
			return api.Role{}, UsageError{fmt.Errorf("--k3s-token-file: %w", err)}
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return api.Role{}, UsageError{fmt.Errorf("--k3s-token-file %s is empty", o.k3sTokenFile)}
		}
	case token == "":
		token = strings.TrimSpace(o.tokenFromEnv)
	}
	if token == "" {
		return api.Role{}, UsageError{fmt.Errorf("--agent-of needs the K3s join token: --k3s-token, --k3s-token-file or $%s", envK3sToken)}
	}
	role := api.Role{Kind: api.RoleAgent, ServerURL: o.agentOf, Token: token}
	if err := role.Validate(); err != nil {
		// The message names the URL, never the token.
		return api.Role{}, UsageError{fmt.Errorf("--agent-of/--k3s-token: %w", err)}
	}
	return role, nil
}

func newCmdDeviceRole(f *fleetGlobals) *cobra.Command {
	o := &deviceRoleOptions{}
	c := &cobra.Command{
		Use:   "role ID --server | --agent-of https://HOST:6443 (--k3s-token TOKEN | --k3s-token-file FILE) [--reset]",
		Short: "Set the K3s role a device should have",
		Long: `Set the K3s role a device should have; its agent applies it at its next heartbeat.
A node whose K3s has state (it has run as the other role, or as an agent of another server)
refuses the change and reports it in its heartbeats (edgeimg fleet device show) until a reset
is ordered: --reset orders it too, and the device then wipes its K3s state, enrolls again and
starts the new role. The join token may also come from $` + envK3sToken + `; it is never printed.`,
		Example: `  edgeimg fleet device role 10000000c0ffee42 --server
  edgeimg fleet device role 10000000c0ffee42 --agent-of https://10.0.0.5:6443 --k3s-token-file node-token --reset`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return UsageError{fmt.Errorf("want one device ID, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			o.tokenFromEnv = os.Getenv(envK3sToken)
			role, err := o.Validate()
			if err != nil {
				return err
			}
			a, err := f.admin()
			if err != nil {
				return err
			}
			d, err := a.SetRole(c.Context(), args[0], role)
			if err != nil {
				return err
			}
			w := c.OutOrStdout()
			if o.reset {
				if d, err = a.Reset(c.Context(), args[0]); err != nil {
					return fmt.Errorf("device %s: the role is set to %s, but ordering the reset: %w", args[0], role, err)
				}
				_, err = fmt.Fprintf(w, "%s: role %s; reset ordered: the device wipes its K3s state and starts the new role at its next heartbeat\n", d.ID, d.Role)
				return err
			}
			_, err = fmt.Fprintf(w, "%s: role %s (a node whose K3s has state refuses the change until a reset: --reset)\n", d.ID, d.Role)
			return err
		},
	}
	o.AddFlags(c.Flags())
	return c
}
