package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newCmdFleetDashboard(f *fleetGlobals) *cobra.Command {
	return &cobra.Command{
		Use:   "dashboard",
		Short: "Print a one-time login link for the fleet dashboard",
		Long: `Print a link that logs a browser in to the dashboard at the fleet server's / once, within
two minutes (the session then lasts 12 hours). The dashboard's login form takes the admin token too.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			a, err := f.admin()
			if err != nil {
				return err
			}
			l, err := a.DashboardLink(c.Context())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(c.OutOrStdout(), l.URL)
			fmt.Fprintf(c.ErrOrStderr(), "open it in a browser before %s; it works once\n", l.ExpiresAt.Local().Format(time.Kitchen))
			return err
		},
	}
}
