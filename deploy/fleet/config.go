package fleet

import (
	"errors"
	"fmt"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"
)

// Resources are the CPU and memory requests and limits of one container.
type Resources struct {
	CPURequest, CPULimit       string
	MemoryRequest, MemoryLimit string
}

// Config says what to deploy. LoadConfig fills it from the stack's configuration.
type Config struct {
	Namespace   string // Kubernetes namespace created for the fleet
	Image       string // image holding the edgeimg binary
	PublicURL   string // --public-url of fleet serve; empty: not passed
	ServiceType string // LoadBalancer or ClusterIP
	Replicas    int    // initial replicas of the fleet Deployment
	MinReplicas int    // HPA minimum
	MaxReplicas int    // HPA maximum
	CPUTarget   int    // HPA average CPU utilization, percent of the request
	Server      Resources

	// The files of `edgeimg fleet init`, mounted as --dir. All secret.
	CACert, CAKey, ServerCert, ServerKey, AdminToken pulumi.StringOutput

	// DatabaseURL, when set, is an external postgres:// DSN and no PostgreSQL is deployed.
	DatabaseURL pulumi.StringOutput
	External    bool

	// In-cluster PostgreSQL (used when External is false).
	PostgresImage        string
	PostgresPassword     pulumi.StringOutput
	PostgresStorage      string // PVC size, e.g. 10Gi
	PostgresStorageClass string // empty: the cluster's default
	Postgres             Resources
}

// Defaults are the values LoadConfig uses for keys that are not set.
var Defaults = Config{
	Namespace:       "edgeimg-fleet",
	ServiceType:     "LoadBalancer",
	Replicas:        2,
	MinReplicas:     2,
	MaxReplicas:     6,
	CPUTarget:       70,
	Server:          Resources{CPURequest: "250m", CPULimit: "1", MemoryRequest: "128Mi", MemoryLimit: "512Mi"},
	PostgresImage:   "postgres:16",
	PostgresStorage: "10Gi",
	Postgres:        Resources{CPURequest: "250m", CPULimit: "1", MemoryRequest: "256Mi", MemoryLimit: "1Gi"},
}

// LoadConfig reads the stack configuration (keys documented in deploy/README.md) under the
// project's namespace and checks it.
func LoadConfig(ctx *pulumi.Context) (Config, error) {
	c := config.New(ctx, "")
	cfg := Defaults
	var errs []error
	str := func(key string, dst *string) {
		if v := c.Get(key); v != "" {
			*dst = v
		}
	}
	num := func(key string, dst *int) {
		if c.Get(key) == "" {
			return
		}
		n, err := c.TryInt(key)
		if err != nil {
			errs = append(errs, fmt.Errorf("config %s: %q is not a whole number", key, c.Get(key)))
		}
		*dst = n
	}
	secret := func(key string) pulumi.StringOutput {
		v, err := c.TrySecret(key)
		if err != nil {
			errs = append(errs, fmt.Errorf("config %s: required (pulumi config set --secret %s …)", key, key))
		}
		return v
	}
	str("image", &cfg.Image)
	str("namespace", &cfg.Namespace)
	str("publicUrl", &cfg.PublicURL)
	str("serviceType", &cfg.ServiceType)
	num("replicas", &cfg.Replicas)
	num("minReplicas", &cfg.MinReplicas)
	num("maxReplicas", &cfg.MaxReplicas)
	num("cpuTarget", &cfg.CPUTarget)
	str("cpuRequest", &cfg.Server.CPURequest)
	str("cpuLimit", &cfg.Server.CPULimit)
	str("memoryRequest", &cfg.Server.MemoryRequest)
	str("memoryLimit", &cfg.Server.MemoryLimit)
	cfg.CACert = secret("caCert")
	cfg.CAKey = secret("caKey")
	cfg.ServerCert = secret("serverCert")
	cfg.ServerKey = secret("serverKey")
	cfg.AdminToken = secret("adminToken")
	if c.Get("databaseUrl") != "" {
		cfg.External = true
		cfg.DatabaseURL = secret("databaseUrl")
	} else {
		cfg.PostgresPassword = secret("postgresPassword")
		str("postgresImage", &cfg.PostgresImage)
		str("postgresStorage", &cfg.PostgresStorage)
		str("postgresStorageClass", &cfg.PostgresStorageClass)
		str("postgresCpuRequest", &cfg.Postgres.CPURequest)
		str("postgresCpuLimit", &cfg.Postgres.CPULimit)
		str("postgresMemoryRequest", &cfg.Postgres.MemoryRequest)
		str("postgresMemoryLimit", &cfg.Postgres.MemoryLimit)
	}
	if len(errs) > 0 {
		return cfg, errors.Join(errs...)
	}
	return cfg, cfg.Check()
}

// Check reports the first inconsistent value of the configuration.
func (c *Config) Check() error {
	switch {
	case c.Image == "":
		return fmt.Errorf("config image: the fleet server image is required")
	case c.ServiceType != "LoadBalancer" && c.ServiceType != "ClusterIP":
		return fmt.Errorf("config serviceType: %q is neither LoadBalancer nor ClusterIP", c.ServiceType)
	case c.MinReplicas < 2:
		return fmt.Errorf("config minReplicas: %d is below 2 (one replica is a single point of failure)", c.MinReplicas)
	case c.MaxReplicas < c.MinReplicas:
		return fmt.Errorf("config maxReplicas: %d is below minReplicas %d", c.MaxReplicas, c.MinReplicas)
	case c.Replicas < c.MinReplicas || c.Replicas > c.MaxReplicas:
		return fmt.Errorf("config replicas: %d is outside minReplicas..maxReplicas (%d..%d)", c.Replicas, c.MinReplicas, c.MaxReplicas)
	case c.CPUTarget < 1 || c.CPUTarget > 100:
		return fmt.Errorf("config cpuTarget: %d is not a percentage between 1 and 100", c.CPUTarget)
	case !c.External && c.PostgresImage == "":
		return fmt.Errorf("config postgresImage: empty")
	}
	for _, r := range []struct {
		name string
		r    Resources
	}{{"fleet server", c.Server}, {"postgres", c.Postgres}} {
		if r.name == "postgres" && c.External {
			continue
		}
		if r.r.CPURequest == "" || r.r.CPULimit == "" || r.r.MemoryRequest == "" || r.r.MemoryLimit == "" {
			return fmt.Errorf("%s resources: requests and limits of cpu and memory are all required", r.name)
		}
	}
	return nil
}
