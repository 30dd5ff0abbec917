package cli

import (
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/edgeimg/edgeimg/ota/bundle"
)

// NewCmdKeys returns `edgeimg keys`.
func NewCmdKeys(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the ed25519 keys that sign OTA update bundles",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdKeysCreate(g))
	return cmd
}

// keysCreateOptions are the flags of `edgeimg keys create`.
type keysCreateOptions struct {
	Out string
}

// AddFlags registers the flags.
func (o *keysCreateOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.Out, "out", "keys/ota", "path prefix of the key pair: writes PREFIX.key (0600) and PREFIX.pub")
}

// Validate checks the flags.
func (o *keysCreateOptions) Validate() error {
	if o.Out == "" {
		return errors.New("--out: must be a path prefix such as keys/ota")
	}
	return nil
}

// NewCmdKeysCreate returns `edgeimg keys create`.
func NewCmdKeysCreate(_ *globals) *cobra.Command {
	o := &keysCreateOptions{}
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Make an ed25519 key pair for signing update bundles",
		Long: "Writes PREFIX.key (PEM PKCS#8, mode 0600: keep it secret, e.g. in CI secrets) and PREFIX.pub.\n" +
			"Name the key in edgeimg.yaml as ota.signingKey; its public key is baked into every image\n" +
			"(with ota.trustedKeys), and devices accept only bundles signed by a trusted key.\n" +
			"Existing files are never replaced.",
		Example: "  edgeimg keys create --out keys/ota   # keys/ota.key and keys/ota.pub",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			key, pub, id, err := bundle.CreateKeyFiles(o.Out, rand.Reader)
			if err != nil {
				return fmt.Errorf("keys create: %w", err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n%s\nkey id %s\n", key, pub, id)
			return err
		},
	}
	o.AddFlags(cmd)
	return cmd
}
