package cli

import (
	"github.com/spf13/cobra"

	"github.com/edgeimg/edgeimg/builder/spec"
)

// NewCmdSchema returns `edgeimg schema`.
func NewCmdSchema(_ *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "schema",
		Short:   "Print the JSON Schema of edgeimg.yaml",
		Example: "  edgeimg schema > edgeimg.schema.json   # for editors: # yaml-language-server: $schema=edgeimg.schema.json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := spec.Schema()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(append(b, '\n'))
			return err
		},
	}
}
