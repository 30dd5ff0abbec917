package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"

	appsv1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/apps/v1"
	autoscalingv2 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/autoscaling/v2"
	corev1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/core/v1"
	metav1 "github.com/pulumi/pulumi-kubernetes/sdk/v4/go/kubernetes/meta/v1"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Port is the HTTPS port the fleet server listens on and its Service exposes.
const Port = 8443

// PKIDir is where the fleet server's Secret (the files of `edgeimg fleet init`) is mounted.
const PKIDir = "/etc/edgeimg/fleet"

// ReleasesDir is where the shared fleet-releases volume is mounted, read-write: --releases.
const ReleasesDir = "/var/lib/edgeimg/releases"

// OTAKeysDir is where the fleet-ota-keys ConfigMap is mounted: key-N.pub, one --trusted-key each.
const OTAKeysDir = "/etc/edgeimg/ota-keys"

// ServerUID is the user and group the fleet server runs as (the image's nonroot user); the
// pod's fsGroup, so that it can read the PKI Secret and write the releases volume.
const ServerUID = 65532

// OTAKeysAnnotation, on the fleet server's pod template, is the sha256 of the trusted keys:
// a change of keys rolls the pods (the server reads --trusted-key files once, at start).
const OTAKeysAnnotation = "edgeimg.dev/ota-keys-sha256"

// Kubernetes object names (fixed, so that DNS names and kubectl commands are predictable).
const (
	ServerName       = "fleet-server"   // Deployment, Service and HPA of the fleet server
	PKISecretName    = "fleet-pki"      // ca.pem, ca-key.pem, server.pem, server-key.pem, admin-token
	DBSecretName     = "fleet-db"       // key dsn: the postgres:// URL the server uses
	ReleasesPVCName  = "fleet-releases" // ReadWriteMany PVC shared by the replicas: --releases
	OTAKeysName      = "fleet-ota-keys" // ConfigMap key-N.pub: the --trusted-key files
	PostgresName     = "postgres"       // StatefulSet and headless Service of the in-cluster PostgreSQL
	PostgresSecret   = "postgres"       // key password
	postgresUser     = "edgeimg"
	postgresDatabase = "edgeimg"
)

// Fleet holds the resources Deploy creates. The PostgreSQL ones are nil with an external database.
type Fleet struct {
	Namespace       *corev1.Namespace
	PKISecret       *corev1.Secret
	DBSecret        *corev1.Secret
	Releases        *corev1.PersistentVolumeClaim
	OTAKeys         *corev1.ConfigMap // nil without trusted keys
	PostgresSecret  *corev1.Secret
	PostgresService *corev1.Service
	Postgres        *appsv1.StatefulSet
	Deployment      *appsv1.Deployment
	Service         *corev1.Service
	HPA             *autoscalingv2.HorizontalPodAutoscaler
}

// Deploy declares the fleet server and, unless cfg.External, the PostgreSQL it uses.
func Deploy(ctx *pulumi.Context, cfg Config, opts ...pulumi.ResourceOption) (*Fleet, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	trusted, err := cfg.TrustedKeys()
	if err != nil {
		return nil, err
	}
	f := &Fleet{}
	f.Namespace, err = corev1.NewNamespace(ctx, cfg.Namespace, &corev1.NamespaceArgs{
		Metadata: &metav1.ObjectMetaArgs{Name: pulumi.String(cfg.Namespace), Labels: labels("namespace")},
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("declaring namespace %s: %w", cfg.Namespace, err)
	}
	ns := f.Namespace.Metadata.Name().Elem()
	meta := func(name, component string) *metav1.ObjectMetaArgs {
		return &metav1.ObjectMetaArgs{Name: pulumi.String(name), Namespace: ns, Labels: labels(component)}
	}

	f.PKISecret, err = corev1.NewSecret(ctx, PKISecretName, &corev1.SecretArgs{
		Metadata: meta(PKISecretName, "fleet-server"),
		Type:     pulumi.String("Opaque"),
		StringData: pulumi.StringMap{
			"ca.pem":         pulumi.ToSecret(cfg.CACert).(pulumi.StringOutput),
			"ca-key.pem":     pulumi.ToSecret(cfg.CAKey).(pulumi.StringOutput),
			"server.pem":     pulumi.ToSecret(cfg.ServerCert).(pulumi.StringOutput),
			"server-key.pem": pulumi.ToSecret(cfg.ServerKey).(pulumi.StringOutput),
			"admin-token":    pulumi.ToSecret(cfg.AdminToken).(pulumi.StringOutput),
		},
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("declaring secret %s: %w", PKISecretName, err)
	}

	dsn := cfg.DatabaseURL
	serverOpts := opts
	if !cfg.External {
		if err := f.postgres(ctx, cfg, meta, opts); err != nil {
			return nil, err
		}
		dsn = pulumi.ToSecret(cfg.PostgresPassword.ApplyT(func(pw string) string {
			u := url.URL{Scheme: "postgres", User: url.UserPassword(postgresUser, pw),
				Host: fmt.Sprintf("%s.%s.svc:5432", PostgresName, cfg.Namespace), Path: "/" + postgresDatabase,
				RawQuery: "sslmode=disable"}
			return u.String()
		})).(pulumi.StringOutput)
		// The server refuses to start without its database: let PostgreSQL become ready first.
		serverOpts = append(append([]pulumi.ResourceOption{}, opts...), pulumi.DependsOn([]pulumi.Resource{f.Postgres, f.PostgresService}))
	}
	f.DBSecret, err = corev1.NewSecret(ctx, DBSecretName, &corev1.SecretArgs{
		Metadata:   meta(DBSecretName, "fleet-server"),
		Type:       pulumi.String("Opaque"),
		StringData: pulumi.StringMap{"dsn": pulumi.ToSecret(dsn).(pulumi.StringOutput)},
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("declaring secret %s: %w", DBSecretName, err)
	}

	// The releases every replica serves and any replica may store a push into.
	claim := &corev1.PersistentVolumeClaimSpecArgs{
		AccessModes: pulumi.StringArray{pulumi.String("ReadWriteMany")},
		Resources:   &corev1.VolumeResourceRequirementsArgs{Requests: pulumi.StringMap{"storage": pulumi.String(cfg.ReleasesStorage)}},
	}
	if cfg.ReleasesStorageClass != "" {
		claim.StorageClassName = pulumi.String(cfg.ReleasesStorageClass)
	}
	f.Releases, err = corev1.NewPersistentVolumeClaim(ctx, ReleasesPVCName, &corev1.PersistentVolumeClaimArgs{
		Metadata: meta(ReleasesPVCName, "fleet-server"),
		Spec:     claim,
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("declaring persistent volume claim %s: %w", ReleasesPVCName, err)
	}

	sel := pulumi.StringMap{"app.kubernetes.io/name": pulumi.String("edgeimg"), "app.kubernetes.io/component": pulumi.String("fleet-server")}
	args := pulumi.StringArray{pulumi.String("fleet"), pulumi.String("serve"),
		pulumi.String(fmt.Sprintf("--listen=:%d", Port)),
		pulumi.String("--db=$(EDGEIMG_FLEET_DB)"),
		pulumi.String("--dir=" + PKIDir),
		pulumi.String("--releases=" + ReleasesDir)}
	if cfg.PublicURL != "" {
		args = append(args, pulumi.String("--public-url="+cfg.PublicURL))
	}
	mounts := corev1.VolumeMountArray{
		corev1.VolumeMountArgs{Name: pulumi.String("pki"), MountPath: pulumi.String(PKIDir), ReadOnly: pulumi.Bool(true)},
		corev1.VolumeMountArgs{Name: pulumi.String("releases"), MountPath: pulumi.String(ReleasesDir)},
	}
	volumes := corev1.VolumeArray{
		corev1.VolumeArgs{
			Name: pulumi.String("pki"),
			Secret: &corev1.SecretVolumeSourceArgs{
				SecretName: f.PKISecret.Metadata.Name().Elem(), DefaultMode: pulumi.Int(0o440)},
		},
		corev1.VolumeArgs{
			Name:                  pulumi.String("releases"),
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSourceArgs{ClaimName: f.Releases.Metadata.Name().Elem()},
		},
	}
	podMeta := &metav1.ObjectMetaArgs{Labels: sel}
	if len(trusted) > 0 {
		data := pulumi.StringMap{}
		sum := sha256.New()
		for i, k := range trusted {
			name := fmt.Sprintf("key-%d.pub", i)
			data[name] = pulumi.String(k)
			args = append(args, pulumi.String("--trusted-key="+OTAKeysDir+"/"+name))
			fmt.Fprintf(sum, "%s\n%s", name, k)
		}
		f.OTAKeys, err = corev1.NewConfigMap(ctx, OTAKeysName, &corev1.ConfigMapArgs{
			Metadata: meta(OTAKeysName, "fleet-server"),
			Data:     data,
		}, opts...)
		if err != nil {
			return nil, fmt.Errorf("declaring config map %s: %w", OTAKeysName, err)
		}
		mounts = append(mounts, corev1.VolumeMountArgs{Name: pulumi.String("ota-keys"), MountPath: pulumi.String(OTAKeysDir), ReadOnly: pulumi.Bool(true)})
		volumes = append(volumes, corev1.VolumeArgs{
			Name:      pulumi.String("ota-keys"),
			ConfigMap: &corev1.ConfigMapVolumeSourceArgs{Name: f.OTAKeys.Metadata.Name().Elem(), DefaultMode: pulumi.Int(0o444)},
		})
		podMeta.Annotations = pulumi.StringMap{OTAKeysAnnotation: pulumi.String(hex.EncodeToString(sum.Sum(nil)))}
	}
	probe := func(period, failures int) *corev1.ProbeArgs {
		return &corev1.ProbeArgs{
			HttpGet:          &corev1.HTTPGetActionArgs{Path: pulumi.String("/healthz"), Port: pulumi.Int(Port), Scheme: pulumi.String("HTTPS")},
			PeriodSeconds:    pulumi.Int(period),
			TimeoutSeconds:   pulumi.Int(3),
			FailureThreshold: pulumi.Int(failures),
		}
	}
	f.Deployment, err = appsv1.NewDeployment(ctx, ServerName, &appsv1.DeploymentArgs{
		Metadata: meta(ServerName, "fleet-server"),
		Spec: &appsv1.DeploymentSpecArgs{
			Replicas: pulumi.Int(cfg.Replicas),
			Selector: &metav1.LabelSelectorArgs{MatchLabels: sel},
			Strategy: &appsv1.DeploymentStrategyArgs{
				Type:          pulumi.String("RollingUpdate"),
				RollingUpdate: &appsv1.RollingUpdateDeploymentArgs{MaxUnavailable: pulumi.Int(0), MaxSurge: pulumi.Int(1)},
			},
			Template: &corev1.PodTemplateSpecArgs{
				Metadata: podMeta,
				Spec: &corev1.PodSpecArgs{
					// The image's nonroot user; fsGroup makes the PKI Secret readable and the
					// releases volume writable by it (see README.md for NFS-like volumes).
					SecurityContext: &corev1.PodSecurityContextArgs{
						RunAsNonRoot:        pulumi.Bool(true),
						RunAsUser:           pulumi.Int(ServerUID),
						RunAsGroup:          pulumi.Int(ServerUID),
						FsGroup:             pulumi.Int(ServerUID),
						FsGroupChangePolicy: pulumi.String("OnRootMismatch"), // no recursive chown of every chunk at each start
						SeccompProfile:      &corev1.SeccompProfileArgs{Type: pulumi.String("RuntimeDefault")},
					},
					Containers: corev1.ContainerArray{corev1.ContainerArgs{
						Name:  pulumi.String("fleet-server"),
						Image: pulumi.String(cfg.Image),
						Args:  args,
						Ports: corev1.ContainerPortArray{corev1.ContainerPortArgs{Name: pulumi.String("https"), ContainerPort: pulumi.Int(Port)}},
						Env: corev1.EnvVarArray{corev1.EnvVarArgs{
							Name: pulumi.String("EDGEIMG_FLEET_DB"),
							ValueFrom: &corev1.EnvVarSourceArgs{SecretKeyRef: &corev1.SecretKeySelectorArgs{
								Name: f.DBSecret.Metadata.Name().Elem(), Key: pulumi.String("dsn")}},
						}},
						Resources:      resources(cfg.Server),
						LivenessProbe:  probe(10, 3),
						ReadinessProbe: probe(5, 2),
						VolumeMounts:   mounts,
						SecurityContext: &corev1.SecurityContextArgs{
							AllowPrivilegeEscalation: pulumi.Bool(false),
							ReadOnlyRootFilesystem:   pulumi.Bool(true),
							Capabilities:             &corev1.CapabilitiesArgs{Drop: pulumi.StringArray{pulumi.String("ALL")}},
						},
					}},
					Volumes: volumes,
				},
			},
		},
	}, serverOpts...)
	if err != nil {
		return nil, fmt.Errorf("declaring deployment %s: %w", ServerName, err)
	}

	f.Service, err = corev1.NewService(ctx, ServerName, &corev1.ServiceArgs{
		Metadata: meta(ServerName, "fleet-server"),
		Spec: &corev1.ServiceSpecArgs{
			Type:     pulumi.String(cfg.ServiceType),
			Selector: sel,
			Ports: corev1.ServicePortArray{corev1.ServicePortArgs{
				Name: pulumi.String("https"), Port: pulumi.Int(Port), TargetPort: pulumi.String("https"), Protocol: pulumi.String("TCP")}},
		},
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("declaring service %s: %w", ServerName, err)
	}

	f.HPA, err = autoscalingv2.NewHorizontalPodAutoscaler(ctx, ServerName, &autoscalingv2.HorizontalPodAutoscalerArgs{
		Metadata: meta(ServerName, "fleet-server"),
		Spec: &autoscalingv2.HorizontalPodAutoscalerSpecArgs{
			ScaleTargetRef: &autoscalingv2.CrossVersionObjectReferenceArgs{
				ApiVersion: pulumi.String("apps/v1"), Kind: pulumi.String("Deployment"), Name: f.Deployment.Metadata.Name().Elem()},
			MinReplicas: pulumi.Int(cfg.MinReplicas),
			MaxReplicas: pulumi.Int(cfg.MaxReplicas),
			Metrics: autoscalingv2.MetricSpecArray{autoscalingv2.MetricSpecArgs{
				Type: pulumi.String("Resource"),
				Resource: &autoscalingv2.ResourceMetricSourceArgs{
					Name:   pulumi.String("cpu"),
					Target: &autoscalingv2.MetricTargetArgs{Type: pulumi.String("Utilization"), AverageUtilization: pulumi.Int(cfg.CPUTarget)},
				},
			}},
		},
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("declaring horizontal pod autoscaler %s: %w", ServerName, err)
	}
	return f, nil
}

// postgres declares the in-cluster PostgreSQL: its password Secret, headless Service and
// StatefulSet with one PVC.
func (f *Fleet) postgres(ctx *pulumi.Context, cfg Config, meta func(string, string) *metav1.ObjectMetaArgs, opts []pulumi.ResourceOption) error {
	var err error
	f.PostgresSecret, err = corev1.NewSecret(ctx, PostgresSecret, &corev1.SecretArgs{
		Metadata:   meta(PostgresSecret, "postgres"),
		Type:       pulumi.String("Opaque"),
		StringData: pulumi.StringMap{"password": pulumi.ToSecret(cfg.PostgresPassword).(pulumi.StringOutput)},
	}, opts...)
	if err != nil {
		return fmt.Errorf("declaring secret %s: %w", PostgresSecret, err)
	}
	sel := pulumi.StringMap{"app.kubernetes.io/name": pulumi.String("edgeimg"), "app.kubernetes.io/component": pulumi.String("postgres")}
	f.PostgresService, err = corev1.NewService(ctx, PostgresName, &corev1.ServiceArgs{
		Metadata: meta(PostgresName, "postgres"),
		Spec: &corev1.ServiceSpecArgs{
			ClusterIP: pulumi.String("None"),
			Selector:  sel,
			Ports: corev1.ServicePortArray{corev1.ServicePortArgs{
				Name: pulumi.String("postgres"), Port: pulumi.Int(5432), TargetPort: pulumi.String("postgres")}},
		},
	}, opts...)
	if err != nil {
		return fmt.Errorf("declaring service %s: %w", PostgresName, err)
	}
	pvc := &corev1.PersistentVolumeClaimSpecArgs{
		AccessModes: pulumi.StringArray{pulumi.String("ReadWriteOnce")},
		Resources:   &corev1.VolumeResourceRequirementsArgs{Requests: pulumi.StringMap{"storage": pulumi.String(cfg.PostgresStorage)}},
	}
	if cfg.PostgresStorageClass != "" {
		pvc.StorageClassName = pulumi.String(cfg.PostgresStorageClass)
	}
	ready := &corev1.ProbeArgs{
		Exec:          &corev1.ExecActionArgs{Command: pulumi.StringArray{pulumi.String("pg_isready"), pulumi.String("-U"), pulumi.String(postgresUser), pulumi.String("-d"), pulumi.String(postgresDatabase)}},
		PeriodSeconds: pulumi.Int(5),
	}
	f.Postgres, err = appsv1.NewStatefulSet(ctx, PostgresName, &appsv1.StatefulSetArgs{
		Metadata: meta(PostgresName, "postgres"),
		Spec: &appsv1.StatefulSetSpecArgs{
			ServiceName: f.PostgresService.Metadata.Name().Elem(),
			Replicas:    pulumi.Int(1),
			Selector:    &metav1.LabelSelectorArgs{MatchLabels: sel},
			Template: &corev1.PodTemplateSpecArgs{
				Metadata: &metav1.ObjectMetaArgs{Labels: sel},
				Spec: &corev1.PodSpecArgs{
					Containers: corev1.ContainerArray{corev1.ContainerArgs{
						Name:  pulumi.String("postgres"),
						Image: pulumi.String(cfg.PostgresImage),
						Ports: corev1.ContainerPortArray{corev1.ContainerPortArgs{Name: pulumi.String("postgres"), ContainerPort: pulumi.Int(5432)}},
						Env: corev1.EnvVarArray{
							corev1.EnvVarArgs{Name: pulumi.String("POSTGRES_USER"), Value: pulumi.String(postgresUser)},
							corev1.EnvVarArgs{Name: pulumi.String("POSTGRES_DB"), Value: pulumi.String(postgresDatabase)},
							corev1.EnvVarArgs{Name: pulumi.String("PGDATA"), Value: pulumi.String("/var/lib/postgresql/data/pgdata")},
							corev1.EnvVarArgs{Name: pulumi.String("POSTGRES_PASSWORD"), ValueFrom: &corev1.EnvVarSourceArgs{
								SecretKeyRef: &corev1.SecretKeySelectorArgs{Name: f.PostgresSecret.Metadata.Name().Elem(), Key: pulumi.String("password")}}},
						},
						Resources:      resources(cfg.Postgres),
						ReadinessProbe: ready,
						LivenessProbe:  &corev1.ProbeArgs{Exec: ready.Exec, PeriodSeconds: pulumi.Int(10), FailureThreshold: pulumi.Int(6)},
						VolumeMounts: corev1.VolumeMountArray{corev1.VolumeMountArgs{
							Name: pulumi.String("data"), MountPath: pulumi.String("/var/lib/postgresql/data")}},
					}},
				},
			},
			VolumeClaimTemplates: corev1.PersistentVolumeClaimTypeArray{corev1.PersistentVolumeClaimTypeArgs{
				Metadata: &metav1.ObjectMetaArgs{Name: pulumi.String("data"), Labels: labels("postgres")},
				Spec:     pvc,
			}},
		},
	}, opts...)
	if err != nil {
		return fmt.Errorf("declaring statefulset %s: %w", PostgresName, err)
	}
	return nil
}

func labels(component string) pulumi.StringMap {
	return pulumi.StringMap{
		"app.kubernetes.io/name":       pulumi.String("edgeimg"),
		"app.kubernetes.io/component":  pulumi.String(component),
		"app.kubernetes.io/managed-by": pulumi.String("pulumi"),
	}
}

func resources(r Resources) *corev1.ResourceRequirementsArgs {
	return &corev1.ResourceRequirementsArgs{
		Requests: pulumi.StringMap{"cpu": pulumi.String(r.CPURequest), "memory": pulumi.String(r.MemoryRequest)},
		Limits:   pulumi.StringMap{"cpu": pulumi.String(r.CPULimit), "memory": pulumi.String(r.MemoryLimit)},
	}
}
