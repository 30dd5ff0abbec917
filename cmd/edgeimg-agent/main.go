package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/edgeimg/edgeimg/agent/grow"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit codes.
const (
	exitError        = 1
	exitCardTooSmall = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := NewRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		os.Exit(report(os.Stderr, err))
	}
}

// report writes err for a person reading the console and returns the exit code for it.
func report(w io.Writer, err error) int {
	fmt.Fprintf(w, "edgeimg-agent: %v\n", err)
	if errors.Is(err, grow.ErrCardTooSmall) {
		return exitCardTooSmall
	}
	return exitError
}

// NewRootCmd returns the edgeimg-agent command with its subcommands.
func NewRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "edgeimg-agent",
		Short:         "The on-device agent of edgeimg images",
		SilenceErrors: true, // main reports them, once
		SilenceUsage:  true,
	}
	root.AddCommand(NewCmdGrowData(), NewCmdRun(), NewCmdReset(), NewCmdUpdate(), NewCmdVersion())
	return root
}

// growDataOptions are the flags of grow-data.
type growDataOptions struct {
	partuuid string
	root     string
}

func (o *growDataOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.partuuid, "partuuid", "", "PARTUUID of the data partition, e.g. 5eed1e55-07 (required)")
	cmd.Flags().StringVar(&o.root, "root", "", "directory holding dev/ and sys/ instead of / (for tests)")
	_ = cmd.Flags().MarkHidden("root")
}

func (o *growDataOptions) Validate() error {
	if o.partuuid == "" {
		return errors.New("grow-data: --partuuid is required")
	}
	_, _, err := grow.ParsePARTUUID(o.partuuid)
	return err
}

// NewCmdGrowData returns the grow-data command, which grows the data partition to the end of
// the card; the boot runs it through edgeimg-grow-data.service.
func NewCmdGrowData() *cobra.Command {
	o := &growDataOptions{}
	cmd := &cobra.Command{
		Use:   "grow-data --partuuid ID",
		Short: "Grow the data partition to the end of the card",
		Long: `Grow the data partition, the last partition of the card, and the extended partition holding
it, to the end of the card, and tell the kernel. Running it again does nothing. It refuses a card
smaller than the image's layout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			res, err := grow.Run(cmd.Context(), grow.Options{PARTUUID: o.partuuid, Root: o.root})
			if err != nil {
				return fmt.Errorf("growing the data partition %s: %w", o.partuuid, err)
			}
			w := cmd.OutOrStdout()
			switch {
			case res.Grown && res.OldSize == res.NewSize:
				fmt.Fprintf(w, "partition %d of %s: told the kernel its size, %d bytes\n", res.Partition, res.Disk, res.NewSize)
			case res.Grown:
				fmt.Fprintf(w, "partition %d of %s grown from %d to %d bytes (card: %d bytes)\n", res.Partition, res.Disk, res.OldSize, res.NewSize, res.DiskSize)
			default:
				fmt.Fprintf(w, "partition %d of %s already fills the card (%d of %d bytes): nothing to do\n", res.Partition, res.Disk, res.NewSize, res.DiskSize)
			}
			return nil
		},
	}
	o.AddFlags(cmd)
	return cmd
}

// NewCmdVersion returns the version command.
func NewCmdVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the agent's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "edgeimg-agent %s\n", version)
			return err
		},
	}
}
