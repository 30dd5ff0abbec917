package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/ota"
)

// NewCmdUpdate returns the update command group.
func NewCmdUpdate() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Inspect over-the-air updates",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdUpdateStatus())
	return cmd
}

// NewCmdUpdateStatus returns `update status`, which prints the update state (state.json).
func NewCmdUpdateStatus() *cobra.Command {
	var root string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the state of the latest update",
		Long: `Print the state of the device's latest over-the-air update, as the agent keeps it in
/var/lib/edgeimg/ota/state.json: the release, its phase (downloading, rebooting, trial,
committed, failed, refused), the slot written and why it failed or was refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := ota.LoadState(device.Paths{Root: root})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if st == nil {
				_, err := fmt.Fprintln(w, "no update yet")
				return err
			}
			b, err := json.MarshalIndent(st, "", "  ")
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(w, "%s\n", b)
			return err
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "directory standing for / (for tests)")
	_ = cmd.Flags().MarkHidden("root")
	return cmd
}
