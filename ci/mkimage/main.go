// Command mkimage builds a Go program of this repository as a multi-platform OCI image
// (images.BuildGoImage: static binary on an empty base, reproducible) and writes it to an OCI
// image layout directory, or pushes it to a registry. No Docker.
//
//	go run ./ci/mkimage -pkg ./manifests/telemetry -push ghcr.io/acme/telemetry:v0.1.0
//	go run ./ci/mkimage -pkg ./cmd/edgeimg -push registry.example.com/edgeimg:v1.2.3   # the fleet server (deploy/)
//	go run ./ci/mkimage -pkg ./cmd/edgeimg -layout build/images/edgeimg
//
// The telemetry service is the example workload of manifests/telemetry.yaml: push it where
// your devices' builds pull it from (or set registries.mirrors) and pin it in edgeimg.lock.
// The edgeimg image runs `edgeimg` as its entrypoint: the Pulumi program in deploy/ runs it
// as `fleet serve`. Credentials come from the Docker config (~/.docker/config.json).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/edgeimg/edgeimg/images"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, os.Args[1:])
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, stdout io.Writer, args []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	pkg := fs.String("pkg", "", "Go main `package` to build (./cmd/edgeimg, ./manifests/telemetry)")
	platforms := fs.String("platforms", "linux/arm64,linux/amd64", "comma-separated `platforms`")
	push := fs.String("push", "", "push the image index to this `reference`")
	dir := fs.String("layout", "", "write the image index into this OCI image layout `directory`")
	epoch := fs.Int64("epoch", 0, "timestamp of the image's files and config, Unix `seconds` (default $SOURCE_DATE_EPOCH or 0)")
	insecure := fs.Bool("insecure", false, "push over plain HTTP (a local registry)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *pkg == "" || (*push == "") == (*dir == "") {
		return errors.New("-pkg and exactly one of -push or -layout are required")
	}
	var pls []v1.Platform
	for _, s := range strings.Split(*platforms, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-platforms %q: %w", s, err)
		}
		pls = append(pls, *p)
	}
	sec := *epoch
	if sec == 0 {
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			if _, err := fmt.Sscan(s, &sec); err != nil {
				return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
			}
		}
	}
	idx, err := images.BuildGoImage(ctx, ".", *pkg, pls, time.Unix(sec, 0).UTC())
	if err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	if *dir != "" {
		p, err := layout.Write(*dir, empty.Index)
		if err != nil {
			return fmt.Errorf("%s: %w", *dir, err)
		}
		if err := p.AppendIndex(idx); err != nil {
			return fmt.Errorf("%s: %w", *dir, err)
		}
		_, err = fmt.Fprintf(stdout, "%s@%s\n", *dir, d)
		return err
	}
	var opts []name.Option
	if *insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(*push, opts...)
	if err != nil {
		return fmt.Errorf("-push %q: %w", *push, err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	_, err = fmt.Fprintf(stdout, "%s@%s\n", ref.Context(), d)
	return err
}
