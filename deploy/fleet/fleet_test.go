package fleet_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/edgeimg/edgeimg/deploy/fleet"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// mocks records every resource the program registers; outputs echo the inputs, as a
// Kubernetes API server would for the fields the program sets.
type mocks struct {
	mu  sync.Mutex
	res map[string]resource.PropertyMap // "type name" → inputs
}

func (m *mocks) NewResource(args pulumi.MockResourceArgs) (string, resource.PropertyMap, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.res[args.TypeToken+" "+args.Name] = args.Inputs
	return args.Name + "-id", args.Inputs, nil
}

func (m *mocks) Call(args pulumi.MockCallArgs) (resource.PropertyMap, error) {
	return args.Args, nil
}

const (
	tDeployment  = "kubernetes:apps/v1:Deployment"
	tStatefulSet = "kubernetes:apps/v1:StatefulSet"
	tHPA         = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
	tNamespace   = "kubernetes:core/v1:Namespace"
	tSecret      = "kubernetes:core/v1:Secret"
	tService     = "kubernetes:core/v1:Service"
	tPVC         = "kubernetes:core/v1:PersistentVolumeClaim"
	tConfigMap   = "kubernetes:core/v1:ConfigMap"
)

var secretConfig = map[string]string{
	"edgeimg-fleet:caCert":     "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n",
	"edgeimg-fleet:caKey":      "-----BEGIN PRIVATE KEY-----\ncakey\n-----END PRIVATE KEY-----\n",
	"edgeimg-fleet:serverCert": "-----BEGIN CERTIFICATE-----\nserver\n-----END CERTIFICATE-----\n",
	"edgeimg-fleet:serverKey":  "-----BEGIN PRIVATE KEY-----\nserverkey\n-----END PRIVATE KEY-----\n",
	"edgeimg-fleet:adminToken": "0123456789abcdef0123456789abcdef",
}

// deploy runs LoadConfig and Deploy, as main does, against the mocks with the given config
// (keys without the project prefix; the secret ones above are always set).
func deploy(t *testing.T, extra map[string]string) (map[string]resource.PropertyMap, error) {
	t.Helper()
	m := &mocks{res: map[string]resource.PropertyMap{}}
	conf := map[string]string{}
	var secretKeys []string
	for k, v := range secretConfig {
		conf[k] = v
		secretKeys = append(secretKeys, k)
	}
	for k, v := range extra {
		conf["edgeimg-fleet:"+k] = v
		if k == "postgresPassword" || k == "databaseUrl" {
			secretKeys = append(secretKeys, "edgeimg-fleet:"+k)
		}
	}
	err := pulumi.RunErr(func(ctx *pulumi.Context) error {
		cfg, err := fleet.LoadConfig(ctx)
		if err != nil {
			return err
		}
		_, err = fleet.Deploy(ctx, cfg)
		return err
	}, pulumi.WithMocks("edgeimg-fleet", "test", m), func(info *pulumi.RunInfo) {
		info.Config = conf
		info.ConfigSecretKeys = secretKeys
	})
	return m.res, err
}

// get walks nested objects and arrays: get(v, "spec", "template", 0, …).
func get(t *testing.T, pm resource.PropertyMap, path ...any) resource.PropertyValue {
	t.Helper()
	v := resource.NewObjectProperty(pm)
	for _, p := range path {
		for v.IsSecret() {
			v = v.SecretValue().Element
		}
		switch p := p.(type) {
		case string:
			if !v.IsObject() {
				t.Fatalf("%v: %v is not an object", path, v)
			}
			v = v.ObjectValue()[resource.PropertyKey(p)]
		case int:
			if !v.IsArray() || len(v.ArrayValue()) <= p {
				t.Fatalf("%v: %v has no element %d", path, v, p)
			}
			v = v.ArrayValue()[p]
		}
	}
	return v
}

func str(t *testing.T, pm resource.PropertyMap, path ...any) string {
	t.Helper()
	v := get(t, pm, path...)
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	if !v.IsString() {
		t.Fatalf("%v: %v is not a string", path, v)
	}
	return v.StringValue()
}

func num(t *testing.T, pm resource.PropertyMap, path ...any) int {
	t.Helper()
	v := get(t, pm, path...)
	if !v.IsNumber() {
		t.Fatalf("%v: %v is not a number", path, v)
	}
	return int(v.NumberValue())
}

func need(t *testing.T, res map[string]resource.PropertyMap, typ, name string) resource.PropertyMap {
	t.Helper()
	pm, ok := res[typ+" "+name]
	if !ok {
		t.Fatalf("no %s %q among %v", typ, name, keys(res))
	}
	return pm
}

func keys(res map[string]resource.PropertyMap) []string {
	var k []string
	for n := range res {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// containers returns the containers of a pod template's spec in a Deployment or StatefulSet.
func containers(t *testing.T, pm resource.PropertyMap) []resource.PropertyValue {
	t.Helper()
	v := get(t, pm, "spec", "template", "spec", "containers")
	if !v.IsArray() || len(v.ArrayValue()) == 0 {
		t.Fatalf("no containers: %v", v)
	}
	return v.ArrayValue()
}

func TestInClusterPostgres(t *testing.T) {
	res, err := deploy(t, map[string]string{
		"image": "registry.example.com/edgeimg:1.2.3", "postgresPassword": "s3cret/p@ss", "publicUrl": "https://fleet.example.com:8443"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		tDeployment + " fleet-server", tHPA + " fleet-server", tService + " fleet-server",
		tNamespace + " edgeimg-fleet", tSecret + " fleet-pki", tSecret + " fleet-db", tSecret + " postgres",
		tPVC + " fleet-releases",
		tService + " postgres", tStatefulSet + " postgres",
	}
	sort.Strings(want)
	if got := keys(res); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("resources:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, k := range want {
		pm := res[k]
		if ns := k[strings.Index(k, " ")+1:]; strings.HasPrefix(k, tNamespace) {
			if got := str(t, pm, "metadata", "name"); got != ns {
				t.Errorf("%s: name %q", k, got)
			}
			continue
		}
		if got := str(t, pm, "metadata", "namespace"); got != "edgeimg-fleet" {
			t.Errorf("%s: namespace %q, want edgeimg-fleet", k, got)
		}
		if got, name := str(t, pm, "metadata", "name"), k[strings.Index(k, " ")+1:]; got != name {
			t.Errorf("%s: metadata.name %q", k, got)
		}
	}

	// Every container of every workload has cpu and memory requests and limits.
	for _, k := range []string{tDeployment + " fleet-server", tStatefulSet + " postgres"} {
		for i := range containers(t, res[k]) {
			for _, kind := range []string{"requests", "limits"} {
				for _, r := range []string{"cpu", "memory"} {
					if s := str(t, res[k], "spec", "template", "spec", "containers", i, "resources", kind, r); s == "" {
						t.Errorf("%s container %d: empty %s.%s", k, i, kind, r)
					}
				}
			}
		}
	}

	dep := need(t, res, tDeployment, "fleet-server")
	if n := num(t, dep, "spec", "replicas"); n < 2 {
		t.Errorf("deployment replicas %d, want ≥ 2", n)
	}
	c := []any{"spec", "template", "spec", "containers", 0}
	if img := str(t, dep, append(c, "image")...); img != "registry.example.com/edgeimg:1.2.3" {
		t.Errorf("image %q", img)
	}
	var args []string
	for _, a := range get(t, dep, append(c, "args")...).ArrayValue() {
		args = append(args, a.StringValue())
	}
	for _, w := range []string{"fleet", "serve", "--listen=:8443", "--db=$(EDGEIMG_FLEET_DB)", "--dir=" + fleet.PKIDir, "--public-url=https://fleet.example.com:8443"} {
		if !contains(args, w) {
			t.Errorf("args %q lack %q", args, w)
		}
	}
	if n, k := str(t, dep, append(c, "env", 0, "name")...), str(t, dep, append(c, "env", 0, "valueFrom", "secretKeyRef", "name")...); n != "EDGEIMG_FLEET_DB" || k != "fleet-db" {
		t.Errorf("env 0: %s from secret %s, want EDGEIMG_FLEET_DB from fleet-db", n, k)
	}
	for _, p := range []string{"livenessProbe", "readinessProbe"} {
		if got := fmt.Sprint(str(t, dep, append(c, p, "httpGet", "path")...), " ", str(t, dep, append(c, p, "httpGet", "scheme")...), " ", num(t, dep, append(c, p, "httpGet", "port")...)); got != "/healthz HTTPS 8443" {
			t.Errorf("%s: %s", p, got)
		}
	}
	// The PKI Secret is mounted as --dir.
	if s := str(t, dep, "spec", "template", "spec", "volumes", 0, "secret", "secretName"); s != "fleet-pki" {
		t.Errorf("volume 0 is secret %q, want fleet-pki", s)
	}
	if v, m := str(t, dep, "spec", "template", "spec", "volumes", 0, "name"), str(t, dep, append(c, "volumeMounts", 0, "name")...); v != m {
		t.Errorf("volume %q is not the one mounted (%q)", v, m)
	}
	if p := str(t, dep, append(c, "volumeMounts", 0, "mountPath")...); p != fleet.PKIDir {
		t.Errorf("pki mounted at %s", p)
	}
	sel := get(t, dep, "spec", "selector", "matchLabels").ObjectValue()
	for k, v := range sel {
		if got := str(t, dep, "spec", "template", "metadata", "labels", string(k)); got != v.StringValue() {
			t.Errorf("pod label %s=%q, selector wants %q", k, got, v.StringValue())
		}
	}

	svc := need(t, res, tService, "fleet-server")
	if typ, port := str(t, svc, "spec", "type"), num(t, svc, "spec", "ports", 0, "port"); typ != "LoadBalancer" || port != 8443 {
		t.Errorf("service %s port %d, want LoadBalancer 8443", typ, port)
	}
	for k, v := range sel {
		if got := str(t, svc, "spec", "selector", string(k)); got != v.StringValue() {
			t.Errorf("service selector %s=%q, deployment's %q", k, got, v.StringValue())
		}
	}

	hpa := need(t, res, tHPA, "fleet-server")
	ref := fmt.Sprint(str(t, hpa, "spec", "scaleTargetRef", "apiVersion"), " ", str(t, hpa, "spec", "scaleTargetRef", "kind"), " ", str(t, hpa, "spec", "scaleTargetRef", "name"))
	if ref != "apps/v1 Deployment "+str(t, dep, "metadata", "name") {
		t.Errorf("hpa targets %s", ref)
	}
	if mn, mx := num(t, hpa, "spec", "minReplicas"), num(t, hpa, "spec", "maxReplicas"); mn != 2 || mx != 6 {
		t.Errorf("hpa min %d max %d, want 2 and 6", mn, mx)
	}
	if r, u := str(t, hpa, "spec", "metrics", 0, "resource", "name"), num(t, hpa, "spec", "metrics", 0, "resource", "target", "averageUtilization"); r != "cpu" || u != 70 {
		t.Errorf("hpa metric %s %d%%, want cpu 70%%", r, u)
	}

	// Key material, passwords and the DSN are secret in the state.
	pki := need(t, res, tSecret, "fleet-pki")
	for _, k := range []string{"ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "admin-token"} {
		if !get(t, pki, "stringData", k).ContainsSecrets() && !get(t, pki, "stringData").IsSecret() {
			t.Errorf("fleet-pki %s is not secret", k)
		}
		if got := str(t, pki, "stringData", k); got != secretConfig["edgeimg-fleet:"+camel(k)] {
			t.Errorf("fleet-pki %s = %q", k, got)
		}
	}
	db := need(t, res, tSecret, "fleet-db")
	if !db["stringData"].ContainsSecrets() {
		t.Error("fleet-db dsn is not secret")
	}
	if dsn := str(t, db, "stringData", "dsn"); dsn != "postgres://edgeimg:s3cret%2Fp%40ss@postgres.edgeimg-fleet.svc:5432/edgeimg?sslmode=disable" {
		t.Errorf("dsn %q", dsn)
	}
	if !need(t, res, tSecret, "postgres")["stringData"].ContainsSecrets() {
		t.Error("postgres password is not secret")
	}

	pg := need(t, res, tStatefulSet, "postgres")
	if img := str(t, pg, "spec", "template", "spec", "containers", 0, "image"); img != "postgres:16" {
		t.Errorf("postgres image %q", img)
	}
	if s := str(t, pg, "spec", "volumeClaimTemplates", 0, "spec", "resources", "requests", "storage"); s != "10Gi" {
		t.Errorf("postgres pvc %q", s)
	}
	if n := str(t, pg, "spec", "serviceName"); n != "postgres" {
		t.Errorf("statefulset service %q", n)
	}
}

func camel(file string) string {
	return map[string]string{"ca.pem": "caCert", "ca-key.pem": "caKey", "server.pem": "serverCert", "server-key.pem": "serverKey", "admin-token": "adminToken"}[file]
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestExternalDatabaseAndClusterIP(t *testing.T) {
	res, err := deploy(t, map[string]string{
		"image": "edgeimg:dev", "databaseUrl": "postgres://u:p@db.example.com/fleet", "serviceType": "ClusterIP",
		"replicas": "3", "minReplicas": "3", "maxReplicas": "10", "cpuTarget": "60", "namespace": "fleet"})
	if err != nil {
		t.Fatal(err)
	}
	for k := range res {
		if strings.HasPrefix(k, tStatefulSet) || strings.HasSuffix(k, " postgres") {
			t.Errorf("external database, yet %s is declared", k)
		}
	}
	if got := str(t, need(t, res, tSecret, "fleet-db"), "stringData", "dsn"); got != "postgres://u:p@db.example.com/fleet" {
		t.Errorf("dsn %q", got)
	}
	if !need(t, res, tSecret, "fleet-db")["stringData"].ContainsSecrets() {
		t.Error("external dsn is not secret")
	}
	if typ := str(t, need(t, res, tService, "fleet-server"), "spec", "type"); typ != "ClusterIP" {
		t.Errorf("service type %q", typ)
	}
	dep, hpa := need(t, res, tDeployment, "fleet-server"), need(t, res, tHPA, "fleet-server")
	if got := fmt.Sprint(num(t, dep, "spec", "replicas"), num(t, hpa, "spec", "minReplicas"), num(t, hpa, "spec", "maxReplicas"),
		num(t, hpa, "spec", "metrics", 0, "resource", "target", "averageUtilization")); got != "3 3 10 60" {
		t.Errorf("replicas min max cpu = %s, want 3 3 10 60", got)
	}
	if ns := str(t, dep, "metadata", "namespace"); ns != "fleet" {
		t.Errorf("namespace %q", ns)
	}
	for _, a := range get(t, dep, "spec", "template", "spec", "containers", 0, "args").ArrayValue() {
		if strings.HasPrefix(a.StringValue(), "--public-url") {
			t.Errorf("publicUrl unset, yet %s", a.StringValue())
		}
	}
}

func TestBadConfig(t *testing.T) {
	for _, tc := range []struct {
		conf map[string]string
		want string
	}{
		{map[string]string{"postgresPassword": "x"}, "image"},
		{map[string]string{"image": "i"}, "postgresPassword"},
		{map[string]string{"image": "i", "postgresPassword": "x", "serviceType": "NodePort"}, "serviceType"},
		{map[string]string{"image": "i", "postgresPassword": "x", "minReplicas": "1", "replicas": "1"}, "minReplicas"},
		{map[string]string{"image": "i", "postgresPassword": "x", "maxReplicas": "1"}, "maxReplicas"},
		{map[string]string{"image": "i", "postgresPassword": "x", "replicas": "9"}, "replicas"},
		{map[string]string{"image": "i", "postgresPassword": "x", "cpuTarget": "0"}, "cpuTarget"},
		{map[string]string{"image": "i", "postgresPassword": "x", "memoryLimit": ""}, ""}, // empty means default: fine
	} {
		res, err := deploy(t, tc.conf)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%v: %v", tc.conf, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.conf, err, tc.want)
		}
		if len(res) != 0 {
			t.Errorf("%v: refused, yet declared %v", tc.conf, keys(res))
		}
	}
}

// strs returns an array of strings.
func strs(t *testing.T, pm resource.PropertyMap, path ...any) []string {
	t.Helper()
	v := get(t, pm, path...)
	if !v.IsArray() {
		t.Fatalf("%v: %v is not an array", path, v)
	}
	var out []string
	for _, e := range v.ArrayValue() {
		if !e.IsString() {
			t.Fatalf("%v: %v is not a string", path, e)
		}
		out = append(out, e.StringValue())
	}
	return out
}

// named returns the index of the element of the array at path whose name is name, or -1.
func named(t *testing.T, pm resource.PropertyMap, name string, path ...any) int {
	t.Helper()
	for i, e := range get(t, pm, path...).ArrayValue() {
		if n := e.ObjectValue()["name"]; n.IsString() && n.StringValue() == name {
			return i
		}
	}
	return -1
}

var podSpec = []any{"spec", "template", "spec"}
var container0 = []any{"spec", "template", "spec", "containers", 0}

func TestReleasesVolumeAndSecurityContext(t *testing.T) {
	for _, tc := range []struct {
		conf        map[string]string
		size, class string
		wantNoClass bool
	}{
		{conf: map[string]string{}, size: "20Gi", wantNoClass: true},
		{conf: map[string]string{"releasesStorage": "200Gi", "releasesStorageClass": "efs-sc", "databaseUrl": "postgres://u:p@db/fleet"}, size: "200Gi", class: "efs-sc"},
	} {
		conf := map[string]string{"image": "edgeimg:dev", "postgresPassword": "x"}
		for k, v := range tc.conf {
			conf[k] = v
		}
		if _, ok := conf["databaseUrl"]; ok {
			delete(conf, "postgresPassword")
		}
		res, err := deploy(t, conf)
		if err != nil {
			t.Fatal(err)
		}
		pvc := need(t, res, tPVC, fleet.ReleasesPVCName)
		if m := strs(t, pvc, "spec", "accessModes"); strings.Join(m, ",") != "ReadWriteMany" {
			t.Errorf("%v: pvc access modes %v, want [ReadWriteMany]", tc.conf, m)
		}
		if s := str(t, pvc, "spec", "resources", "requests", "storage"); s != tc.size {
			t.Errorf("%v: pvc size %q, want %q", tc.conf, s, tc.size)
		}
		if sc := get(t, pvc, "spec", "storageClassName"); tc.wantNoClass && !sc.IsNull() {
			t.Errorf("%v: storageClassName %v, want the cluster default (unset)", tc.conf, sc)
		} else if !tc.wantNoClass && (!sc.IsString() || sc.StringValue() != tc.class) {
			t.Errorf("%v: storageClassName %v, want %q", tc.conf, sc, tc.class)
		}
		if ns := str(t, pvc, "metadata", "namespace"); ns != "edgeimg-fleet" {
			t.Errorf("pvc namespace %q", ns)
		}

		dep := need(t, res, tDeployment, fleet.ServerName)
		args := strs(t, dep, append(container0, "args")...)
		if !contains(args, "--releases="+fleet.ReleasesDir) {
			t.Errorf("args %q lack --releases=%s", args, fleet.ReleasesDir)
		}
		v := named(t, dep, "releases", append(podSpec, "volumes")...)
		if v < 0 {
			t.Fatalf("no volume named releases")
		}
		if c := str(t, dep, append(podSpec, "volumes", v, "persistentVolumeClaim", "claimName")...); c != fleet.ReleasesPVCName {
			t.Errorf("releases volume claims %q", c)
		}
		mnt := named(t, dep, "releases", append(container0, "volumeMounts")...)
		if mnt < 0 {
			t.Fatalf("releases volume is not mounted")
		}
		if p := str(t, dep, append(container0, "volumeMounts", mnt, "mountPath")...); p != fleet.ReleasesDir {
			t.Errorf("releases mounted at %s", p)
		}
		if ro := get(t, dep, append(container0, "volumeMounts", mnt, "readOnly")...); ro.IsBool() && ro.BoolValue() {
			t.Error("releases mounted read-only")
		}
		// The PKI Secret stays read-only.
		if ro := get(t, dep, append(container0, "volumeMounts", named(t, dep, "pki", append(container0, "volumeMounts")...), "readOnly")...); !ro.IsBool() || !ro.BoolValue() {
			t.Error("pki not mounted read-only")
		}

		psc := append(append([]any{}, podSpec...), "securityContext")
		if got := fmt.Sprintf("%v %d %d %d %s", get(t, dep, append(psc, "runAsNonRoot")...).BoolValue(), num(t, dep, append(psc, "runAsUser")...),
			num(t, dep, append(psc, "runAsGroup")...), num(t, dep, append(psc, "fsGroup")...),
			str(t, dep, append(psc, "seccompProfile", "type")...)); got != "true 65532 65532 65532 RuntimeDefault" {
			t.Errorf("pod securityContext runAsNonRoot uid gid fsGroup seccomp = %s", got)
		}
		csc := append(append([]any{}, container0...), "securityContext")
		if ape, ro := get(t, dep, append(csc, "allowPrivilegeEscalation")...), get(t, dep, append(csc, "readOnlyRootFilesystem")...); !ape.IsBool() || ape.BoolValue() || !ro.IsBool() || !ro.BoolValue() {
			t.Errorf("container securityContext allowPrivilegeEscalation %v readOnlyRootFilesystem %v, want false true", ape, ro)
		}
		if d := strs(t, dep, append(csc, "capabilities", "drop")...); strings.Join(d, ",") != "ALL" {
			t.Errorf("capabilities dropped %v, want [ALL]", d)
		}

		// Without otaTrustedKeys: no ConfigMap, no --trusted-key, nothing mounted for it.
		if _, ok := res[tConfigMap+" "+fleet.OTAKeysName]; ok {
			t.Errorf("%s declared without otaTrustedKeys", fleet.OTAKeysName)
		}
		for _, a := range args {
			if strings.HasPrefix(a, "--trusted-key") {
				t.Errorf("otaTrustedKeys unset, yet %s", a)
			}
		}
		if named(t, dep, "ota-keys", append(podSpec, "volumes")...) >= 0 || named(t, dep, "ota-keys", append(container0, "volumeMounts")...) >= 0 {
			t.Error("otaTrustedKeys unset, yet an ota-keys volume")
		}
		if a := get(t, dep, "spec", "template", "metadata", "annotations"); a.IsObject() && a.ObjectValue().HasValue(fleet.OTAKeysAnnotation) {
			t.Errorf("otaTrustedKeys unset, yet annotation %v", a)
		}
	}
}

// pubPEM makes a new ed25519 key and returns its public key and PEM PKIX form.
func pubPEM(t *testing.T) (ed25519.PublicKey, string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pub, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func TestTrustedKeys(t *testing.T) {
	pub0, pem0 := pubPEM(t)
	pub1, pem1 := pubPEM(t)
	// As `pulumi config set otaTrustedKeys "$(cat a.pub b.pub)"` gives them: $(…) drops the
	// final newline; a blank line between the two is fine too.
	res, err := deploy(t, map[string]string{"image": "edgeimg:dev", "postgresPassword": "x",
		"otaTrustedKeys": pem0 + "\n" + strings.TrimSuffix(pem1, "\n")})
	if err != nil {
		t.Fatal(err)
	}
	cm := need(t, res, tConfigMap, fleet.OTAKeysName)
	if ns := str(t, cm, "metadata", "namespace"); ns != "edgeimg-fleet" {
		t.Errorf("configmap namespace %q", ns)
	}
	if n := len(get(t, cm, "data").ObjectValue()); n != 2 {
		t.Errorf("configmap has %d files, want 2", n)
	}
	for i, want := range []ed25519.PublicKey{pub0, pub1} {
		file := fmt.Sprintf("key-%d.pub", i)
		b := str(t, cm, "data", file)
		blk, rest := pem.Decode([]byte(b))
		if blk == nil || blk.Type != "PUBLIC KEY" || strings.TrimSpace(string(rest)) != "" {
			t.Fatalf("%s is not one PEM PUBLIC KEY block: %q", file, b)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if !want.Equal(k) {
			t.Errorf("%s holds another key than block %d", file, i)
		}
	}

	dep := need(t, res, tDeployment, fleet.ServerName)
	var flags []string
	for _, a := range strs(t, dep, append(container0, "args")...) {
		if strings.HasPrefix(a, "--trusted-key") {
			flags = append(flags, a)
		}
	}
	want := []string{"--trusted-key=" + fleet.OTAKeysDir + "/key-0.pub", "--trusted-key=" + fleet.OTAKeysDir + "/key-1.pub"}
	if strings.Join(flags, " ") != strings.Join(want, " ") {
		t.Errorf("trusted-key flags %q, want %q", flags, want)
	}
	v := named(t, dep, "ota-keys", append(podSpec, "volumes")...)
	if v < 0 {
		t.Fatal("no ota-keys volume")
	}
	if n := str(t, dep, append(podSpec, "volumes", v, "configMap", "name")...); n != fleet.OTAKeysName {
		t.Errorf("ota-keys volume from configmap %q", n)
	}
	m := named(t, dep, "ota-keys", append(container0, "volumeMounts")...)
	if m < 0 {
		t.Fatal("ota-keys volume not mounted")
	}
	if p, ro := str(t, dep, append(container0, "volumeMounts", m, "mountPath")...), get(t, dep, append(container0, "volumeMounts", m, "readOnly")...); p != fleet.OTAKeysDir || !ro.IsBool() || !ro.BoolValue() {
		t.Errorf("ota-keys mounted at %s readOnly %v, want %s read-only", p, ro, fleet.OTAKeysDir)
	}

	// Changing the keys changes the pod template, so the pods restart with them.
	sums := map[string]string{"both": str(t, dep, "spec", "template", "metadata", "annotations", fleet.OTAKeysAnnotation)}
	for name, k := range map[string]string{"key 0": pem0, "key 1": pem1} {
		res1, err := deploy(t, map[string]string{"image": "edgeimg:dev", "postgresPassword": "x", "otaTrustedKeys": k})
		if err != nil {
			t.Fatal(err)
		}
		sums[name] = str(t, need(t, res1, tDeployment, fleet.ServerName), "spec", "template", "metadata", "annotations", fleet.OTAKeysAnnotation)
		if n := len(get(t, need(t, res1, tConfigMap, fleet.OTAKeysName), "data").ObjectValue()); n != 1 {
			t.Errorf("%s alone: %d files", name, n)
		}
	}
	if sums["both"] == "" || sums["both"] == sums["key 0"] || sums["key 0"] == sums["key 1"] || sums["both"] == sums["key 1"] {
		t.Errorf("%s annotations do not tell the key sets apart: %v", fleet.OTAKeysAnnotation, sums)
	}
}

func TestBadTrustedKeys(t *testing.T) {
	_, pem0 := pubPEM(t)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	privPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err = x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ecPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	for _, tc := range []struct {
		name, keys string
		want       []string
	}{
		{"private key second", pem0 + privPEM, []string{"block 1", `"PRIVATE KEY"`, "private key"}},
		{"ecdsa key", ecPEM, []string{"block 0", "ed25519"}},
		{"not PEM", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA user@host", []string{"block 0", "not the start of a PEM block"}},
		{"text after a key", pem0 + "trailing words", []string{"block 1", "trailing words"}},
		{"truncated", pem0 + pem0[:len(pem0)/2], []string{"block 1", "well-formed"}},
		{"garbage DER", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", []string{"block 0"}},
		{"twice the same", pem0 + pem0, []string{"block 1", "same key as block 0"}},
		{"only blanks", " \n\t\n", []string{"no PEM block"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := deploy(t, map[string]string{"image": "i", "postgresPassword": "x", "otaTrustedKeys": tc.keys})
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range append([]string{"config otaTrustedKeys"}, tc.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), strings.Split(privPEM, "\n")[1][:20]) {
				t.Errorf("error %q echoes the private key", err)
			}
			if len(res) != 0 {
				t.Errorf("refused, yet declared %v", keys(res))
			}
		})
	}

	// Check, as Deploy calls it with a Config built by hand.
	cfg := fleet.Defaults
	cfg.Image = "i"
	cfg.PostgresPassword = pulumi.String("x").ToStringOutput()
	cfg.OTATrustedKeys = privPEM
	if err := cfg.Check(); err == nil || !strings.Contains(err.Error(), "otaTrustedKeys: block 0") {
		t.Errorf("Check of a private key: %v", err)
	}
	cfg.OTATrustedKeys = ""
	cfg.ReleasesStorage = ""
	if err := cfg.Check(); err == nil || !strings.Contains(err.Error(), "releasesStorage") {
		t.Errorf("Check of an empty releasesStorage: %v", err)
	}
}
