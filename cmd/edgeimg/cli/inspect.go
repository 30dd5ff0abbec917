package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/edgeimg/edgeimg/builder/inspect"
)

// NewCmdInspect returns `edgeimg inspect`.
func NewCmdInspect(_ *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "inspect IMAGE",
		Short:   "Show the partitions, filesystems, boot configuration and additions of an image",
		Example: "  edgeimg inspect out/store-gateway-rpi4.img\n  edgeimg inspect out/store-gateway-rpi4.img --json | jq .partitions",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("inspect takes one argument, the image file; got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			img, err := inspect.Inspect(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), img)
			}
			return img.Text(cmd.OutOrStdout())
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
