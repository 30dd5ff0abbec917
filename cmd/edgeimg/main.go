// Command edgeimg builds flashable, reproducible Raspberry Pi images that boot into K3s.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgeimg/edgeimg/cmd/edgeimg/cli"
)

// version is set at link time: -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes edgeimg with args and returns the exit status: 0 on success, 2 for a usage
// error (cli.UsageError: a bad flag, argument or SOURCE_DATE_EPOCH), 1 for any other error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := cli.New(version)
	if args == nil {
		args = []string{} // cobra would read os.Args
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "edgeimg:", err)
		var ue cli.UsageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}
