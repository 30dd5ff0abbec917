// Command mkbase writes a Raspberry Pi OS-like base disk image for the demo, the tests and the
// benchmarks, offline and without privileges, and prints its path.
//
//	go run ./ci/mkbase -o base.img                      # full-size firmware, no payload
//	go run ./ci/mkbase -o bench.img -files 20000 -mb 800 # benchmark base (~20k files, 800 MiB)
//	go run ./ci/mkbase -o small.img -small              # tiny, for tests
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/edgeimg/edgeimg/internal/basegen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkbase:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, stdout io.Writer, args []string) error {
	fs := flag.NewFlagSet("mkbase", flag.ContinueOnError)
	out := fs.String("o", "base.img", "output image `path`")
	files := fs.Int("files", 0, "`number` of extra benchmark files under /usr/share/bench and /usr/lib/bench")
	mb := fs.Int64("mb", 0, "total size of the benchmark files in `MiB`")
	small := fs.Bool("small", false, "small firmware placeholders and a 64 MiB boot partition (for tests)")
	seed := fs.Int64("seed", 0, "seed of the content and identifiers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o := basegen.Options{Seed: *seed, ExtraFiles: *files, ExtraBytes: *mb << 20, Small: *small}
	if err := basegen.Generate(ctx, *out, o); err != nil {
		return err
	}
	abs, err := filepath.Abs(*out)
	if err != nil {
		abs = *out
	}
	_, err = fmt.Fprintln(stdout, abs)
	return err
}
