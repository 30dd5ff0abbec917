package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// UsageError is an error in how the command was called (exit status 2).
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

type globals struct {
	version string
	verbose bool
}

// New returns the root command.
func New(version string) *cobra.Command {
	g := &globals{version: version}
	root := &cobra.Command{
		Use:   "edgeimg",
		Short: "Build flashable, reproducible Raspberry Pi images that boot into K3s",
		Long: `edgeimg turns a declarative spec (edgeimg.yaml) and a base OS image into a flashable
SD-card image with an A/B layout for over-the-air updates. It runs without root, Docker or
loop devices, and two builds of the same inputs are byte-identical.`,
		Example: `  edgeimg build --board rpi4
  edgeimg build --board rpi4 -c site.yaml -o dist/
  edgeimg inspect dist/store-gateway-rpi4.img --json
  edgeimg schema > edgeimg.schema.json`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return UsageError{err} })
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log what the build does to stderr")
	root.AddCommand(NewCmdBuild(g), NewCmdInspect(g), NewCmdSchema(g), NewCmdVersion(g), NewCmdFleet(g))
	root.AddCommand(NewCmdPersonalize(g))
	root.AddCommand(NewCmdLock(g), NewCmdPlan(g))
	root.AddCommand(NewCmdKeys(g), NewCmdRelease(g))
	// Without arguments edgeimg prints its help; an unknown command is a usage error.
	root.Args = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unknown command %q for %q (see edgeimg --help)", args[0], c.CommandPath())
		}
		return nil
	}
	root.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	usageArgs(root)
	return root
}

// usageArgs makes the positional-argument errors of c and its subcommands UsageErrors.
func usageArgs(c *cobra.Command) {
	if v := c.Args; v != nil {
		c.Args = func(c *cobra.Command, args []string) error {
			if err := v(c, args); err != nil {
				return UsageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		usageArgs(sub)
	}
}

func (g *globals) logger(w io.Writer) *slog.Logger {
	if !g.verbose {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// isTerminal reports whether w is a terminal (progress bars) rather than a file or pipe.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// NewCmdVersion returns `edgeimg version`.
func NewCmdVersion(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print edgeimg's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := map[string]string{"version": g.version, "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						v["commit"] = s.Value
					}
				}
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), v)
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "edgeimg %s (%s, %s)\n", v["version"], v["go"], v["platform"])
			return err
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
