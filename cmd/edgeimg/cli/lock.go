package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/edgeimg/edgeimg/builder"
	"github.com/edgeimg/edgeimg/builder/lock"
	"github.com/edgeimg/edgeimg/builder/spec"
	"github.com/edgeimg/edgeimg/hw"
)

// LockOptions are the flags of `edgeimg lock`.
type LockOptions struct {
	Config   string
	Board    string
	CacheDir string
}

// AddFlags registers the flags.
func (o *LockOptions) AddFlags(c *cobra.Command) {
	c.Flags().StringVarP(&o.Config, "config", "c", "edgeimg.yaml", "the spec file")
	c.Flags().StringVar(&o.Board, "board", "", "board (overrides the spec's board:): "+fmt.Sprint(hw.Names()))
	c.Flags().StringVar(&o.CacheDir, "cache-dir", "", "download and image cache (default: $XDG_CACHE_HOME/edgeimg)")
}

// Validate checks the flags.
func (o *LockOptions) Validate() error {
	if o.Config == "" {
		return UsageError{errors.New("--config must not be empty")}
	}
	return nil
}

// NewCmdLock returns `edgeimg lock`.
func NewCmdLock(g *globals) *cobra.Command {
	o := &LockOptions{}
	c := &cobra.Command{
		Use:   "lock",
		Short: "Resolve every image tag and download of the spec and write edgeimg.lock",
		Long: `Lock resolves, afresh, every image of the K3s payload (the K3s release's system images,
those the manifests use and the spec's images:) to a digest, and every download (the k3s
executable, a base image URL) to a sha256, and writes them to edgeimg.lock beside the spec,
sorted. Images are pulled for linux/arm64 into the cache on the way, so a build after it needs
no network. edgeimg build uses the lock when it is there and fails when the spec needs
something it does not pin (build --update-lock adds what is missing).`,
		Example: `  edgeimg lock
  edgeimg lock -c site.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			s, _, err := loadSpec(cmd, o.Config, o.Board)
			if err != nil {
				return err
			}
			var opts []builder.Option
			if o.CacheDir != "" {
				opts = append(opts, builder.WithCacheDir(o.CacheDir))
			}
			opts = append(opts, builder.WithLogger(g.logger(cmd.ErrOrStderr())), builder.WithVersion(g.version))
			l, err := builder.Lock(cmd.Context(), s, opts...)
			if err != nil {
				return err
			}
			p := lock.Path(s.Dir)
			if err := lock.Write(p, l); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d images, %d downloads\n", p, len(l.Images), len(l.Downloads))
			return err
		},
	}
	o.AddFlags(c)
	return c
}

// loadSpec loads the spec, applies --board, the board's defaults and validation: what every
// command reading edgeimg.yaml does first. It returns the spec and its board.
func loadSpec(cmd *cobra.Command, config, boardFlag string) (*spec.Spec, hw.Board, error) {
	s, err := spec.Load(config)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !cmd.Flags().Changed("config") {
			return nil, nil, fmt.Errorf("%w (run edgeimg %s in the directory of edgeimg.yaml, or pass -c FILE)", err, cmd.Name())
		}
		return nil, nil, err
	}
	if boardFlag != "" {
		s.Board = boardFlag
	}
	board, err := hw.Lookup(s.Board)
	if err != nil {
		if boardFlag != "" {
			return nil, nil, UsageError{fmt.Errorf("--board: %w", err)}
		}
		return nil, nil, fmt.Errorf("%s: board: %w", config, err)
	}
	d := board.DefaultSizes()
	s.SetDefaults(spec.Defaults{BootSize: spec.Size(d.Boot), SystemSize: spec.Size(d.System),
		DataMinSize: spec.Size(d.DataMin), Compress: "zstd", OutputDir: filepath.Join(s.Dir, "out"), Version: "0"})
	if err := s.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%s:\n%w", config, err)
	}
	return s, board, nil
}

// buildLockOptions reads the spec's edgeimg.lock for a build: the build is pinned to it when
// it exists (and may only add to it with update).
func buildLockOptions(s *spec.Spec, update bool) ([]builder.Option, *lock.Lock, error) {
	if s.Dir == "" {
		return nil, nil, nil
	}
	p := lock.Path(s.Dir)
	l, err := lock.Read(p)
	if err != nil {
		return nil, nil, err
	}
	var opts []builder.Option
	if l != nil {
		opts = append(opts, builder.WithLock(l, p))
	}
	if update {
		opts = append(opts, builder.WithUpdateLock())
	}
	return opts, l, nil
}

// writeBuildLock writes the build's lock beside the spec when there was none (and it pins
// something), or when --update-lock changed it. It returns the path written, or "".
func writeBuildLock(s *spec.Spec, old, got *lock.Lock, update bool) (string, error) {
	if s.Dir == "" || got == nil {
		return "", nil
	}
	switch {
	case old == nil && len(got.Images)+len(got.Downloads) == 0:
		return "", nil
	case old != nil && (!update || old.Equal(got)):
		return "", nil
	}
	p := lock.Path(s.Dir)
	if err := lock.Write(p, got); err != nil {
		return "", err
	}
	return p, nil
}
