package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgeimg/edgeimg/agent/daemon"
	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/agent/k3s"
	"github.com/edgeimg/edgeimg/agent/ota"
)

// runOptions are the flags of run.
type runOptions struct {
	root          string
	configDir     string
	configPartUID string
	fleetURL      string
	caFile        string
	heartbeat     time.Duration
	verbose       bool
}

func (o *runOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.configPartUID, "config-partuuid", "", "PARTUUID of the config (first FAT) partition holding edgeimg/device.yaml, mounted briefly for the import")
	cmd.Flags().StringVar(&o.configDir, "config-dir", "", "directory holding edgeimg/device.yaml instead of the config partition (already mounted)")
	cmd.Flags().StringVar(&o.fleetURL, "fleet-url", "", "fleet server URL (default: url of /usr/lib/edgeimg/fleet.json)")
	cmd.Flags().StringVar(&o.caFile, "ca", "", "fleet CA bundle (default /usr/lib/edgeimg/fleet-ca.pem)")
	cmd.Flags().DurationVar(&o.heartbeat, "heartbeat", 0, "heartbeat interval (default: heartbeat_seconds of fleet.json, else 30s; the fleet's answer wins)")
	cmd.Flags().BoolVarP(&o.verbose, "verbose", "v", false, "log debug messages too")
	cmd.Flags().StringVar(&o.root, "root", "", "directory standing for / (for tests)")
	_ = cmd.Flags().MarkHidden("root")
}

func (o *runOptions) Validate() error {
	if o.configDir != "" && o.configPartUID != "" {
		return errors.New("run: --config-dir and --config-partuuid exclude each other")
	}
	if o.heartbeat < 0 {
		return errors.New("run: --heartbeat must be positive")
	}
	return nil
}

// NewCmdRun returns the run command: the agent's daemon, started by edgeimg-agent.service.
func NewCmdRun() *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Import the device settings, enroll with the fleet, run K3s in the assigned role and report in",
		Long: `Run the agent: import edgeimg/device.yaml from the config partition onto the data partition
(removing the token and Wi-Fi secret from the card), make the device's identity (ID from the
serial number, an ed25519 key), start K3s at once (standalone until enrolled), enroll with the
fleet with backoff, apply the assigned K3s role and send heartbeats. It runs until stopped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			level := slog.LevelInfo
			if o.verbose {
				level = slog.LevelDebug
			}
			p := device.Paths{Root: o.root}
			cfg := daemon.Config{
				Paths: p, ConfigDir: o.configDir, ConfigPARTUUID: o.configPartUID, FleetURL: o.fleetURL, Heartbeat: o.heartbeat,
				Version: daemon.ImageVersion(p, version), Slot: daemon.Slot(p), Runner: k3s.ExecRunner{},
				Log: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})),
			}
			// Updates: the image's trusted keys, release and card; none without keys.
			if oc, err := ota.DeviceConfig(p, cfg.Runner); err == nil {
				cfg.OTA = oc
			} else if !errors.Is(err, fs.ErrNotExist) {
				cfg.Log.Error("updates are off", "err", err)
			}
			if o.caFile != "" {
				ca, err := os.ReadFile(o.caFile)
				if err != nil {
					return fmt.Errorf("reading the fleet CA: %w", err)
				}
				cfg.CAPEM = ca
			}
			return daemon.Run(cmd.Context(), cfg)
		},
	}
	o.AddFlags(cmd)
	return cmd
}

// NewCmdReset returns the reset command: the factory reset of K3s and the role.
func NewCmdReset() *cobra.Command {
	var root string
	var withIdentity bool
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Stop K3s and wipe its state and the role; the next run enrolls again",
		Long: `Reset the device: stop K3s, remove its state (keeping the air-gap images and manifests the
image ships), the node password, the K3s role and the enrollment. The device ID, its key and
certificate and the imported settings stay, so the next run enrolls again with the certificate.
With --identity the key and certificate go too and the next enrollment needs a token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := daemon.Reset(cmd.Context(), device.Paths{Root: root}, k3s.ExecRunner{}, withIdentity); err != nil {
				return fmt.Errorf("reset: %w", err)
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "K3s state, role and enrollment removed: restart edgeimg-agent (or reboot) to enroll again")
			return err
		},
	}
	cmd.Flags().BoolVar(&withIdentity, "identity", false, "also remove the device key and certificate")
	cmd.Flags().StringVar(&root, "root", "", "directory standing for / (for tests)")
	_ = cmd.Flags().MarkHidden("root")
	return cmd
}
