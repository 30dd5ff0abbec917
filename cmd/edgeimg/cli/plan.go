package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/edgeimg/edgeimg/builder"
	"github.com/edgeimg/edgeimg/manifests/plan"
)

// PlanOptions are the flags of `edgeimg plan`.
type PlanOptions struct {
	Config string
	Board  string
	JSON   bool
}

// AddFlags registers the flags.
func (o *PlanOptions) AddFlags(c *cobra.Command) {
	c.Flags().StringVarP(&o.Config, "config", "c", "edgeimg.yaml", "the spec file")
	c.Flags().StringVar(&o.Board, "board", "", "board (overrides the spec's board:)")
	c.Flags().BoolVar(&o.JSON, "json", false, "print the plan as JSON")
}

// Validate checks the flags.
func (o *PlanOptions) Validate() error {
	if o.Config == "" {
		return UsageError{errors.New("--config must not be empty")}
	}
	return nil
}

// NewCmdPlan returns `edgeimg plan`.
func NewCmdPlan(g *globals) *cobra.Command {
	o := &PlanOptions{}
	c := &cobra.Command{
		Use:   "plan",
		Short: "Print the memory and CPU budget of the spec's K3s payload on its board",
		Long: `Plan reads the spec's manifests (nothing is pulled) and prints the budget of the image on
the board variant of hardware.ram: the OS, K3s, edgeimg-agent, cert-manager when enabled, and
each workload at the minimum and maximum replicas of its HPA, with requests and limits. It
exits non-zero when the memory requests at maximum replicas do not fit, naming the HPAs that
overflow and by how much, unless plan.allowOvercommit is set: as edgeimg build does.`,
		Example: `  edgeimg plan
  edgeimg plan -c site.yaml --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			s, _, err := loadSpec(cmd, o.Config, o.Board)
			if err != nil {
				return err
			}
			p, err := builder.Plan(s)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.JSON {
				err = p.WriteJSON(out)
			} else {
				err = p.WriteTable(out)
			}
			if err != nil {
				return err
			}
			if err := plan.Check(p, s.Plan.AllowOvercommit); err != nil {
				return fmt.Errorf("%s: %w (set plan.allowOvercommit to build anyway)", o.Config, err)
			}
			return nil
		},
	}
	o.AddFlags(c)
	return c
}
