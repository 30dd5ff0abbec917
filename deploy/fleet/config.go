package fleet

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

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

	// ReleasesStorage is the size of the fleet-releases PVC (OTA chunks and release files),
	// e.g. 20Gi; ReleasesStorageClass its storage class (empty: the cluster's default), which
	// must offer ReadWriteMany: every replica reads and writes the same releases.
	ReleasesStorage      string
	ReleasesStorageClass string

	// OTATrustedKeys holds the PEM "PUBLIC KEY" blocks (ed25519, as written by
	// `edgeimg keys create`) of the keys a pushed update bundle must be signed with,
	// concatenated. Empty: the server trusts no key and refuses every push.
	OTATrustedKeys string

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
	ReleasesStorage: "20Gi",
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
	str("releasesStorage", &cfg.ReleasesStorage)
	str("releasesStorageClass", &cfg.ReleasesStorageClass)
	str("otaTrustedKeys", &cfg.OTATrustedKeys)
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
	case c.ReleasesStorage == "":
		return fmt.Errorf("config releasesStorage: empty (the size of the %s volume, e.g. 20Gi)", ReleasesPVCName)
	}
	if _, err := c.TrustedKeys(); err != nil {
		return err
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

// TrustedKeys splits OTATrustedKeys into its public keys, each as one PEM "PUBLIC KEY" block
// (re-encoded, so that it is the only content of its file, as --trusted-key wants), in the
// order given; key N becomes key-N.pub. It reports the first block, counted from 0, that is
// not an ed25519 public key, any text outside the blocks and a key given twice.
func (c *Config) TrustedKeys() ([]string, error) {
	const key = "otaTrustedKeys"
	var keys []string
	seen := map[string]int{}
	rest := []byte(c.OTATrustedKeys)
	for i := 0; ; i++ {
		rest = bytes.TrimSpace(rest)
		if len(rest) == 0 {
			break
		}
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("config %s: block %d: %q is not the start of a PEM block (want -----BEGIN PUBLIC KEY-----)", key, i, firstLine(rest))
		}
		blk, r := pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("config %s: block %d: %q does not start a well-formed PEM block (missing END line or bad base64?)", key, i, firstLine(rest))
		}
		rest = r
		if blk.Type != "PUBLIC KEY" {
			hint := ""
			if strings.Contains(blk.Type, "PRIVATE") {
				hint = " (a private key: give the .pub file, and remove this value from the stack config and history)"
			}
			return nil, fmt.Errorf("config %s: block %d: type %q, want \"PUBLIC KEY\"%s", key, i, blk.Type, hint)
		}
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("config %s: block %d: %w", key, i, err)
		}
		pk, ok := pub.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("config %s: block %d: a %T, want an ed25519 key (edgeimg keys create)", key, i, pub)
		}
		if j, dup := seen[string(pk)]; dup {
			return nil, fmt.Errorf("config %s: block %d: the same key as block %d", key, i, j)
		}
		seen[string(pk)] = i
		keys = append(keys, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: blk.Bytes})))
	}
	if len(keys) == 0 && c.OTATrustedKeys != "" {
		return nil, fmt.Errorf("config %s: no PEM block (set it to the contents of a .pub file, or remove it)", key)
	}
	return keys, nil
}

// firstLine returns the start of b's first line, short enough for an error message.
func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}
