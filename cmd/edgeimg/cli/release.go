package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/spf13/cobra"

	"github.com/edgeimg/edgeimg/fleet/api"
	"github.com/edgeimg/edgeimg/fleet/client"
	"github.com/edgeimg/edgeimg/ota/bundle"
	"github.com/edgeimg/edgeimg/ota/ociartifact"
)

// NewCmdRelease returns `edgeimg release` and its subcommands: publish signed update bundles
// to the fleet server (or an OCI registry) and roll them out.
func NewCmdRelease(g *globals) *cobra.Command {
	f := &fleetGlobals{globals: g}
	c := &cobra.Command{
		Use:   "release",
		Short: "Publish update bundles to the fleet server and roll them out in waves",
		Long: `Push the signed NAME-BOARD.update that edgeimg build writes to the fleet server, then
roll it out to the devices a label selector picks, in waves of growing size; the rollout
halts by itself when too many devices fail their update. A bundle can also be pushed to and
pulled from an OCI registry (--oci, release pull).`,
		Example: `  export EDGEIMG_FLEET_URL=https://fleet.example.com:8443 EDGEIMG_ADMIN_TOKEN=$(cat admin-token)
  edgeimg release push dist/gw-rpi4.update
  edgeimg release rollout 2 --selector site=berlin --waves 5%,25%,100% --max-failures 2%
  edgeimg release status 2
  edgeimg release pause 2
  edgeimg release push dist/gw-rpi4.update --oci registry.example.com/edge/gw:2
  edgeimg release pull registry.example.com/edge/gw:2 -o gw-rpi4.update`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	f.addFlags(c.PersistentFlags(), "fleet")
	c.AddCommand(newCmdReleasePush(f), newCmdReleasePull(), newCmdReleaseList(f), newCmdReleaseShow(f),
		newCmdReleaseRollout(f), newCmdReleaseStatus(f),
		newCmdRolloutAction(f, "pause"), newCmdRolloutAction(f, "resume"), newCmdRolloutAction(f, "abort"))
	return c
}

// peekBundle opens path and reads its manifest, unverified, to say what it is; errors name
// the file.
func peekBundle(path string) (*os.File, *bundle.Manifest, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, 0, fmt.Errorf("%s: not a regular file", path)
	}
	m, _, err := bundle.PeekManifest(f)
	if err != nil {
		f.Close()
		return nil, nil, 0, fmt.Errorf("%s is not an update bundle: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	return f, m, st.Size(), nil
}

// registryOptions are how the CLI reaches registries: the credentials of docker login and
// the credential helpers (authn.DefaultKeychain).
func registryOptions() []remote.Option {
	return []remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain)}
}

// releasePushOptions are the flags of `edgeimg release push`.
type releasePushOptions struct {
	OCI string
}

// AddFlags registers the flags.
func (o *releasePushOptions) AddFlags(c *cobra.Command) {
	c.Flags().StringVar(&o.OCI, "oci", "", "push to this OCI registry reference (REGISTRY/REPO:TAG) as an artifact instead of the fleet server")
}

func newCmdReleasePush(f *fleetGlobals) *cobra.Command {
	o := &releasePushOptions{}
	c := &cobra.Command{
		Use:   "push FILE.update [--oci REF]",
		Short: "Upload a signed update bundle to the fleet server (or to an OCI registry with --oci)",
		Long: `Upload NAME-BOARD.update to the fleet server, which verifies its signature with the trusted
keys it was given, splits its parts into chunks (stored once, shared between releases) and
makes it available for rollouts. With --oci the bundle goes to a registry instead.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			path := args[0]
			var ref name.Reference
			if o.OCI != "" {
				r, err := name.ParseReference(o.OCI)
				if err != nil {
					return UsageError{fmt.Errorf("--oci %q: %w", o.OCI, err)}
				}
				ref = r
			}
			file, m, size, err := peekBundle(path)
			if err != nil {
				return err
			}
			defer file.Close()
			w := c.OutOrStdout()
			if ref != nil {
				file.Close()
				info, err := ociartifact.Push(c.Context(), ref, path, registryOptions()...)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(w, "pushed %s %s (%s, %d bytes) to %s@%s\n", m.Name, m.Version, m.Board, size, ref.Context(), info.Digest)
				return err
			}
			a, err := f.admin()
			if err != nil {
				return err
			}
			info, err := a.PushRelease(c.Context(), file, size)
			if err != nil {
				return fmt.Errorf("pushing %s: %w", path, err)
			}
			_, err = fmt.Fprintf(w, "release %s (%s for %s): %s, %d chunks, %s of new chunk data stored\n",
				info.Version, info.Name, info.Board, byteSize(info.Size), info.Chunks, byteSize(info.NewBytes))
			return err
		},
	}
	o.AddFlags(c)
	return c
}

func newCmdReleasePull() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "pull REF -o FILE.update",
		Short: "Download an update bundle pushed to an OCI registry with release push --oci",
		Long: `Download the bundle of an edgeimg update artifact (REGISTRY/REPO:TAG or REPO@sha256:…) to
FILE. The artifact type, size and digest are checked; FILE appears only when all is well.
The bundle's signature is not checked here: devices and the fleet server do that.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if out == "" {
				return UsageError{errors.New("-o FILE is required")}
			}
			ref, err := name.ParseReference(args[0])
			if err != nil {
				return UsageError{fmt.Errorf("%q: %w", args[0], err)}
			}
			info, err := ociartifact.Pull(c.Context(), ref, out, registryOptions()...)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.OutOrStdout(), "pulled %s %s (%s, %d bytes, %s) to %s\n", info.Annotations[ociartifact.AnnotationName],
				info.Annotations[ociartifact.AnnotationVersion], info.Annotations[ociartifact.AnnotationBoard], info.Bundle.Size, info.Digest, out)
			return err
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "file to write the bundle to")
	return c
}

func newCmdReleaseList(f *fleetGlobals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List the releases stored on the fleet server",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return adminCall(c, f, asJSON, func(ctx context.Context, a *client.Admin) ([]api.ReleaseInfo, error) { return a.Releases(ctx) },
				func(w io.Writer, rs []api.ReleaseInfo) error {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "VERSION\tNAME\tBOARD\tSIZE\tCHUNKS\tNEW\tKEY\tPUSHED")
					for _, r := range rs {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Version, r.Name, r.Board, byteSize(r.Size), r.Chunks, byteSize(r.NewBytes), shortID(r.KeyID), r.PushedAt.Format(time.RFC3339))
					}
					return tw.Flush()
				})
		},
	}
	jsonFlag(c, &asJSON)
	return c
}

func newCmdReleaseShow(f *fleetGlobals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show VERSION",
		Short: "Show a release stored on the fleet server",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return adminCall(c, f, asJSON, func(ctx context.Context, a *client.Admin) (*api.ReleaseInfo, error) { return a.Release(ctx, args[0]) }, releaseDetail)
		},
	}
	jsonFlag(c, &asJSON)
	return c
}

// releaseDetail writes a release for a person.
func releaseDetail(w io.Writer, r *api.ReleaseInfo) error {
	minV := firstOf(r.MinVersion, "0")
	_, err := fmt.Fprintf(w, "Version:      %s\nName:         %s\nBoard:        %s (layout %d)\nMin version:  %s\nRollback:     %v\nSigned by:    %s\nSize:         %s (parts %s)\nChunks:       %d (%s new)\nSHA-256:      %s\nPushed:       %s\n",
		r.Version, r.Name, r.Board, r.LayoutVersion, minV, r.Rollback, r.KeyID, byteSize(r.Size), byteSize(r.PartsSize), r.Chunks, byteSize(r.NewBytes), r.SHA256, r.PushedAt.Format(time.RFC3339))
	return err
}

// rolloutOptions are the flags of `edgeimg release rollout`.
type rolloutOptions struct {
	Selector    []string
	Waves       string
	MaxFailures string
}

// AddFlags registers the flags.
func (o *rolloutOptions) AddFlags(c *cobra.Command) {
	c.Flags().StringArrayVar(&o.Selector, "selector", nil, "devices whose labels match all of KEY=VALUE[,KEY=VALUE…] (repeatable; default: every device)")
	c.Flags().StringVar(&o.Waves, "waves", "5%,25%,100%", "cumulative percentages of the selected devices updated wave after wave, ascending, the last 100%")
	c.Flags().StringVar(&o.MaxFailures, "max-failures", "2%", "percentage of the devices targeted so far whose failure halts the rollout")
}

// Request checks the flags and returns the rollout request; errors are UsageErrors.
func (o *rolloutOptions) Request() (api.RolloutRequest, error) {
	var req api.RolloutRequest
	var pairs []string
	for _, s := range o.Selector {
		pairs = append(pairs, strings.Split(s, ",")...)
	}
	sel, err := parseLabels(pairs)
	if err != nil {
		return req, UsageError{fmt.Errorf("--selector: %w", err)}
	}
	if len(sel) > 0 {
		req.Selector = sel
	}
	if strings.TrimSpace(o.Waves) == "" {
		return req, UsageError{errors.New("--waves: empty; write e.g. 5%,25%,100%")}
	}
	for _, w := range strings.Split(o.Waves, ",") {
		p, err := parsePercent(w)
		if err != nil {
			return req, UsageError{fmt.Errorf("--waves %q: %w", o.Waves, err)}
		}
		req.Waves = append(req.Waves, p)
	}
	if req.MaxFailures, err = parsePercent(o.MaxFailures); err != nil {
		return req, UsageError{fmt.Errorf("--max-failures: %w", err)}
	}
	if err := req.Validate(); err != nil {
		return req, UsageError{err}
	}
	return req, nil
}

var percentRE = regexp.MustCompile(`^[0-9]{1,3}(\.[0-9]{1,3})?%?$`)

// parsePercent reads "5%" or "5" (or "2.5%"): a decimal percentage from 0 to 100.
func parsePercent(s string) (float64, error) {
	if !percentRE.MatchString(s) {
		return 0, fmt.Errorf("%q is not a percentage: write e.g. 5%% or 2.5%%", s)
	}
	p, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	if p > 100 {
		return 0, fmt.Errorf("%q: more than 100%%", s)
	}
	return p, nil
}

func newCmdReleaseRollout(f *fleetGlobals) *cobra.Command {
	o := &rolloutOptions{}
	var asJSON bool
	c := &cobra.Command{
		Use:   "rollout VERSION [--selector KEY=VALUE,…] [--waves 5%,25%,100%] [--max-failures 2%]",
		Short: "Roll a stored release out to the selected devices, in waves",
		Long: `Start rolling out a release pushed with release push. The devices the selector matches are
updated in waves: each wave's percentage is cumulative (5%,25%,100% updates 5% of them, then
up to 25%, then all). The next wave starts when no device targeted so far is still on its
way (each has committed or failed the update). When more than --max-failures of the devices
targeted so far fail or refuse the update, the rollout halts: see release status, then
resume (go on anyway) or abort.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			req, err := o.Request()
			if err != nil {
				return err
			}
			return adminCall(c, f, asJSON, func(ctx context.Context, a *client.Admin) (*api.RolloutStatus, error) {
				return a.Rollout(ctx, args[0], req)
			}, rolloutStatus)
		},
	}
	o.AddFlags(c)
	jsonFlag(c, &asJSON)
	return c
}

func newCmdReleaseStatus(f *fleetGlobals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status VERSION",
		Short: "Show a release's rollout: state, wave, device counts and failures",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return adminCall(c, f, asJSON, func(ctx context.Context, a *client.Admin) (*api.RolloutStatus, error) {
				return a.RolloutStatus(ctx, args[0])
			}, rolloutStatus)
		},
	}
	jsonFlag(c, &asJSON)
	return c
}

func newCmdRolloutAction(f *fleetGlobals, action string) *cobra.Command {
	short := map[string]string{
		"pause":  "Pause a rollout: no further devices are told to update (those updating go on)",
		"resume": "Resume a paused or halted rollout",
		"abort":  "Abort a rollout: devices not yet updated keep their release",
	}[action]
	var asJSON bool
	c := &cobra.Command{
		Use:   action + " VERSION",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			do := map[string]func(*client.Admin, context.Context, string) (*api.RolloutStatus, error){
				"pause": (*client.Admin).PauseRollout, "resume": (*client.Admin).ResumeRollout, "abort": (*client.Admin).AbortRollout,
			}[action]
			return adminCall(c, f, asJSON, func(ctx context.Context, a *client.Admin) (*api.RolloutStatus, error) { return do(a, ctx, args[0]) }, rolloutStatus)
		},
	}
	jsonFlag(c, &asJSON)
	return c
}

// rolloutStatus writes a rollout's state for a person.
func rolloutStatus(w io.Writer, st *api.RolloutStatus) error {
	waves := make([]string, len(st.Waves))
	for i, p := range st.Waves {
		waves[i] = strconv.FormatFloat(p, 'f', -1, 64) + "%"
	}
	wave := "-"
	if n := len(st.Waves); n > 0 {
		i := min(max(st.Wave, 0), n-1)
		wave = fmt.Sprintf("%d/%d (%s of the selected devices; waves %s)", i+1, n, waves[i], strings.Join(waves, ","))
	}
	sel := labelString(st.Selector)
	if sel == "" {
		sel = "every device"
	}
	fmt.Fprintf(w, "Release:       %s\nState:         %s\n", st.Version, st.State)
	if st.Reason != "" {
		fmt.Fprintf(w, "Halt reason:   %s\n", st.Reason)
	}
	fmt.Fprintf(w, "Selector:      %s\nWave:          %s\nMax failures:  %s%%\nDevices:       %d selected, %d targeted: %d committed, %d failed, %d pending\nUpdated:       %s\n",
		sel, wave, strconv.FormatFloat(st.MaxFailures, 'f', -1, 64), st.Selected, st.Targeted, st.Committed, st.Failed, st.Pending, st.UpdatedAt.Format(time.RFC3339))
	if len(st.Failures) == 0 {
		return nil
	}
	fmt.Fprintln(w, "Failures:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  DEVICE\tSTATE\tREASON\tDETAIL")
	for _, f := range st.Failures {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", f.DeviceID, f.State, f.Reason, f.Detail)
	}
	return tw.Flush()
}

// byteSize writes n bytes for a person: 512 B, 3.2 MiB.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// shortID is the first 12 hex digits of a key id.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
