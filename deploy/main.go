// Command deploy is the Pulumi program that runs the edgeimg fleet server on Kubernetes
// (see README.md: pulumi login, pulumi stack init, pulumi config set --secret …, pulumi up).
package main

import (
	"github.com/edgeimg/edgeimg/deploy/fleet"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

func main() {
	pulumi.Run(run)
}

func run(ctx *pulumi.Context) error {
	cfg, err := fleet.LoadConfig(ctx)
	if err != nil {
		return err
	}
	f, err := fleet.Deploy(ctx, cfg)
	if err != nil {
		return err
	}
	ctx.Export("namespace", f.Namespace.Metadata.Name())
	ctx.Export("service", f.Service.Metadata.Name())
	ctx.Export("loadBalancer", f.Service.Status.LoadBalancer().Ingress())
	return nil
}
