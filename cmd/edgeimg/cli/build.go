package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/edgeimg/edgeimg/builder"
	"github.com/edgeimg/edgeimg/builder/spec"
	"github.com/edgeimg/edgeimg/hw"
	_ "github.com/edgeimg/edgeimg/hw/rpi4" // registers the rpi4 board
)

// BuildOptions are the flags of `edgeimg build`.
type BuildOptions struct {
	Config   string
	Board    string
	Output   string
	Agent    string
	CacheDir string
	JSON     bool
	// UpdateLock lets the build add what edgeimg.lock does not pin instead of failing.
	UpdateLock bool
}

// AddFlags registers the flags.
func (o *BuildOptions) AddFlags(c *cobra.Command) {
	c.Flags().StringVarP(&o.Config, "config", "c", "edgeimg.yaml", "the spec file")
	c.Flags().StringVar(&o.Board, "board", "", "board to build for (overrides the spec's board:): "+fmt.Sprint(hw.Names()))
	c.Flags().StringVarP(&o.Output, "output", "o", "", "output directory (overrides the spec's output.dir)")
	c.Flags().StringVar(&o.Agent, "agent", "", "edgeimg-agent binary for the board (default: $EDGEIMG_AGENT, or edgeimg-agent-linux-ARCH beside edgeimg)")
	c.Flags().StringVar(&o.CacheDir, "cache-dir", "", "download and base-image cache (default: $XDG_CACHE_HOME/edgeimg)")
	c.Flags().BoolVar(&o.JSON, "json", false, "print the build report as JSON on stdout")
	c.Flags().BoolVar(&o.UpdateLock, "update-lock", false, "resolve what edgeimg.lock does not pin (a stale lock fails the build without it) and rewrite the lock")
	_ = c.RegisterFlagCompletionFunc("board", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return hw.Names(), cobra.ShellCompDirectiveNoFileComp
	})
}

// Validate checks the flags.
func (o *BuildOptions) Validate() error {
	if o.Config == "" {
		return UsageError{errors.New("--config must not be empty")}
	}
	return nil
}

// agentName is the file name of the agent for arch that `make agent` writes and that
// release archives put beside edgeimg.
func agentName(arch string) string { return "edgeimg-agent-linux-" + arch }

// findAgent finds the on-device agent for arch: the --agent flag, else $EDGEIMG_AGENT, else
// edgeimg-agent-linux-ARCH in exeDir (the directory of the edgeimg executable; "" when
// unknown). A path given by the flag or the variable must exist; when none is found the error
// says every way to provide one.
func findAgent(flag, env, exeDir, arch string) (string, error) {
	check := func(p, from string) (string, error) {
		st, err := os.Stat(p)
		if err != nil {
			return "", UsageError{fmt.Errorf("%s: edgeimg-agent %w", from, err)}
		}
		if !st.Mode().IsRegular() {
			return "", UsageError{fmt.Errorf("%s: edgeimg-agent %s is not a regular file", from, p)}
		}
		return p, nil
	}
	if flag != "" {
		return check(flag, "--agent")
	}
	if env != "" {
		return check(env, "$EDGEIMG_AGENT")
	}
	beside := "beside the edgeimg executable"
	if exeDir != "" {
		p := filepath.Join(exeDir, agentName(arch))
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
		beside = "in " + exeDir
	}
	return "", UsageError{fmt.Errorf("no edgeimg-agent binary for linux/%s (it goes into every image): "+
		"pass --agent PATH, set EDGEIMG_AGENT=PATH, or put %s %s; `make agent` builds it",
		arch, agentName(arch), beside)}
}

// exeDir is the directory of the running executable, or "" when it is unknown.
func exeDir() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	return filepath.Dir(exe)
}

// NewCmdBuild returns `edgeimg build`.
func NewCmdBuild(g *globals) *cobra.Command {
	o := &BuildOptions{}
	c := &cobra.Command{
		Use:   "build",
		Short: "Build a flashable image from edgeimg.yaml",
		Long: `Build reads the spec, fetches the base image into the cache, assembles the root
filesystem and writes NAME-BOARD.img, its compressed copy, SHA256SUMS and
NAME-BOARD.report.json into the output directory. Nothing is left there on error.
SOURCE_DATE_EPOCH, when set, is the time of every timestamp in the image.`,
		Example: `  edgeimg build --board rpi4
  edgeimg build --board rpi4 -c site.yaml -o dist/
  SOURCE_DATE_EPOCH=1700000000 edgeimg build --json > report.json`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("build takes no arguments (the spec is -c FILE), got %q", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return runBuild(cmd, g, o)
		},
	}
	o.AddFlags(c)
	return c
}

func runBuild(cmd *cobra.Command, g *globals, o *BuildOptions) error {
	epoch, haveEpoch, err := spec.SourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return UsageError{err}
	}
	s, board, err := loadSpec(cmd, o.Config, o.Board)
	if err != nil {
		return err
	}
	agent, err := findAgent(o.Agent, os.Getenv("EDGEIMG_AGENT"), exeDir(), board.Arch())
	if err != nil {
		return err
	}
	stderr := cmd.ErrOrStderr()
	opts := []builder.Option{
		builder.WithAgent(agent),
		builder.WithLogger(g.logger(stderr)),
		builder.WithVersion(g.version),
		builder.WithProgress(newProgress(stderr)),
	}
	if o.Output != "" {
		opts = append(opts, builder.WithOutputDir(o.Output))
	}
	if o.CacheDir != "" {
		opts = append(opts, builder.WithCacheDir(o.CacheDir))
	}
	if haveEpoch {
		opts = append(opts, builder.WithEpoch(epoch))
	}
	lockOpts, oldLock, err := buildLockOptions(s, o.UpdateLock)
	if err != nil {
		return err
	}
	res, err := builder.Build(cmd.Context(), s, append(opts, lockOpts...)...)
	if err != nil {
		return err
	}
	if p, err := writeBuildLock(s, oldLock, res.Lock, o.UpdateLock); err != nil {
		return err
	} else if p != "" {
		fmt.Fprintf(stderr, "wrote %s\n", p)
	}
	if o.JSON {
		return writeJSON(cmd.OutOrStdout(), res.Report)
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "built %s\n", res.Image)
	if res.Compressed != "" {
		fmt.Fprintf(out, "      %s\n", res.Compressed)
	}
	if res.Update != "" {
		fmt.Fprintf(out, "      %s\n", res.Update)
	}
	for _, t := range res.Report.Timings {
		if t.Stage == "total" {
			fmt.Fprintf(out, "in %.1fs on %d cores\n", t.Seconds, runtime.NumCPU())
		}
	}
	for _, w := range res.Report.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	return nil
}

// progress draws a bar per step on a terminal, and a line per step otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	bar   *progressbar.ProgressBar
	name  string
	start time.Time
}

func newProgress(w io.Writer) *progress { return &progress{w: w, tty: isTerminal(w)} }

func (p *progress) Start(name string, total int64) {
	p.name, p.start = name, time.Now()
	if !p.tty {
		return
	}
	if total <= 0 {
		total = -1
	}
	p.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription(name),
		progressbar.OptionShowBytes(true), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(), progressbar.OptionSetWidth(30))
}

func (p *progress) Add(n int64) {
	if p.bar != nil {
		_ = p.bar.Add64(n)
	}
}

func (p *progress) Done() {
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
	fmt.Fprintf(p.w, "%s: done in %.1fs\n", p.name, time.Since(p.start).Seconds())
}
