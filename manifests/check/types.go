package check

import (
	"encoding/json"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Scheme holds the kinds manifests may contain: the built-in API groups a K3s payload uses,
// autoscaling/v2 HPAs, K3s's helm.cattle.io/v1 HelmChart and HelmChartConfig, and
// cert-manager's Issuer, ClusterIssuer and Certificate. Any other kind is an error.
var Scheme = newScheme()

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, autoscalingv2.AddToScheme,
		networkingv1.AddToScheme, policyv1.AddToScheme, rbacv1.AddToScheme, schedulingv1.AddToScheme,
		storagev1.AddToScheme, coordinationv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	s.AddKnownTypes(HelmGroupVersion, &HelmChart{}, &HelmChartConfig{})
	s.AddKnownTypes(CertManagerGroupVersion, &Issuer{}, &ClusterIssuer{}, &Certificate{})
	return s
}

// HelmGroupVersion is K3s's helm-controller API.
var HelmGroupVersion = schema.GroupVersion{Group: "helm.cattle.io", Version: "v1"}

// CertManagerGroupVersion is cert-manager's API.
var CertManagerGroupVersion = schema.GroupVersion{Group: "cert-manager.io", Version: "v1"}

// HelmChart is K3s's helm.cattle.io/v1 HelmChart, with the spec fields of helm-controller
// v0.16; nested structures edgeimg does not inspect are kept raw.
type HelmChart struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              HelmChartSpec   `json:"spec,omitempty"`
	Status            json.RawMessage `json:"status,omitempty"`
}

// HelmChartSpec is the spec of a HelmChart.
type HelmChartSpec struct {
	TargetNamespace       string                        `json:"targetNamespace,omitempty"`
	CreateNamespace       bool                          `json:"createNamespace,omitempty"`
	Chart                 string                        `json:"chart,omitempty"`
	Version               string                        `json:"version,omitempty"`
	Repo                  string                        `json:"repo,omitempty"`
	RepoCA                string                        `json:"repoCA,omitempty"`
	RepoCAConfigMap       *corev1.LocalObjectReference  `json:"repoCAConfigMap,omitempty"`
	Set                   map[string]intstr.IntOrString `json:"set,omitempty"`
	ValuesContent         string                        `json:"valuesContent,omitempty"`
	ValuesSecrets         json.RawMessage               `json:"valuesSecrets,omitempty"`
	HelmVersion           string                        `json:"helmVersion,omitempty"`
	Bootstrap             bool                          `json:"bootstrap,omitempty"`
	ChartContent          string                        `json:"chartContent,omitempty"`
	JobImage              string                        `json:"jobImage,omitempty"`
	BackOffLimit          *int32                        `json:"backOffLimit,omitempty"`
	Timeout               *metav1.Duration              `json:"timeout,omitempty"`
	FailurePolicy         string                        `json:"failurePolicy,omitempty"`
	AuthSecret            *corev1.LocalObjectReference  `json:"authSecret,omitempty"`
	AuthPassCredentials   bool                          `json:"authPassCredentials,omitempty"`
	InsecureSkipTLSVerify bool                          `json:"insecureSkipTLSVerify,omitempty"`
	PlainHTTP             bool                          `json:"plainHTTP,omitempty"`
	DockerRegistrySecret  *corev1.LocalObjectReference  `json:"dockerRegistrySecret,omitempty"`
	PodSecurityContext    *corev1.PodSecurityContext    `json:"podSecurityContext,omitempty"`
	SecurityContext       *corev1.SecurityContext       `json:"securityContext,omitempty"`
	TakeOwnership         bool                          `json:"takeOwnership,omitempty"`
}

// HelmChartConfig overrides the values of a HelmChart K3s deploys (traefik, for example).
type HelmChartConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		ValuesContent string          `json:"valuesContent,omitempty"`
		ValuesSecrets json.RawMessage `json:"valuesSecrets,omitempty"`
		FailurePolicy string          `json:"failurePolicy,omitempty"`
	} `json:"spec,omitempty"`
}

// IssuerSpec is the spec of cert-manager's Issuer and ClusterIssuer: one of the issuer kinds.
type IssuerSpec struct {
	SelfSigned *struct {
		CRLDistributionPoints []string `json:"crlDistributionPoints,omitempty"`
	} `json:"selfSigned,omitempty"`
	CA *struct {
		SecretName             string   `json:"secretName"`
		CRLDistributionPoints  []string `json:"crlDistributionPoints,omitempty"`
		OCSPServers            []string `json:"ocspServers,omitempty"`
		IssuingCertificateURLs []string `json:"issuingCertificateURLs,omitempty"`
	} `json:"ca,omitempty"`
	ACME   json.RawMessage `json:"acme,omitempty"`
	Vault  json.RawMessage `json:"vault,omitempty"`
	Venafi json.RawMessage `json:"venafi,omitempty"`
}

// Issuer is cert-manager's namespaced Issuer.
type Issuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              IssuerSpec      `json:"spec"`
	Status            json.RawMessage `json:"status,omitempty"`
}

// ClusterIssuer is cert-manager's cluster-wide Issuer.
type ClusterIssuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              IssuerSpec      `json:"spec"`
	Status            json.RawMessage `json:"status,omitempty"`
}

// Certificate is cert-manager's Certificate.
type Certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		SecretName            string           `json:"secretName"`
		CommonName            string           `json:"commonName,omitempty"`
		DNSNames              []string         `json:"dnsNames,omitempty"`
		IPAddresses           []string         `json:"ipAddresses,omitempty"`
		URIs                  []string         `json:"uris,omitempty"`
		EmailAddresses        []string         `json:"emailAddresses,omitempty"`
		Duration              *metav1.Duration `json:"duration,omitempty"`
		RenewBefore           *metav1.Duration `json:"renewBefore,omitempty"`
		RenewBeforePercentage *int32           `json:"renewBeforePercentage,omitempty"`
		IsCA                  bool             `json:"isCA,omitempty"`
		IssuerRef             struct {
			Name  string `json:"name"`
			Kind  string `json:"kind,omitempty"`
			Group string `json:"group,omitempty"`
		} `json:"issuerRef"`
		PrivateKey *struct {
			Algorithm      string `json:"algorithm,omitempty"`
			Encoding       string `json:"encoding,omitempty"`
			Size           int    `json:"size,omitempty"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
		} `json:"privateKey,omitempty"`
		Usages                  []string        `json:"usages,omitempty"`
		Subject                 json.RawMessage `json:"subject,omitempty"`
		LiteralSubject          string          `json:"literalSubject,omitempty"`
		SecretTemplate          json.RawMessage `json:"secretTemplate,omitempty"`
		Keystores               json.RawMessage `json:"keystores,omitempty"`
		RevisionHistoryLimit    *int32          `json:"revisionHistoryLimit,omitempty"`
		AdditionalOutputFormats json.RawMessage `json:"additionalOutputFormats,omitempty"`
		NameConstraints         json.RawMessage `json:"nameConstraints,omitempty"`
		OtherNames              json.RawMessage `json:"otherNames,omitempty"`
		EncodeUsagesInRequest   *bool           `json:"encodeUsagesInRequest,omitempty"`
	} `json:"spec"`
	Status json.RawMessage `json:"status,omitempty"`
}

// deepCopyJSON copies a value through its JSON form: these types are small and plain.
func deepCopyJSON[T any](in *T) *T {
	out := new(T)
	b, err := json.Marshal(in)
	if err == nil {
		err = json.Unmarshal(b, out)
	}
	if err != nil {
		panic(err)
	}
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *HelmChart) DeepCopyObject() runtime.Object { return deepCopyJSON(in) }

// DeepCopyObject implements runtime.Object.
func (in *HelmChartConfig) DeepCopyObject() runtime.Object { return deepCopyJSON(in) }

// DeepCopyObject implements runtime.Object.
func (in *Issuer) DeepCopyObject() runtime.Object { return deepCopyJSON(in) }

// DeepCopyObject implements runtime.Object.
func (in *ClusterIssuer) DeepCopyObject() runtime.Object { return deepCopyJSON(in) }

// DeepCopyObject implements runtime.Object.
func (in *Certificate) DeepCopyObject() runtime.Object { return deepCopyJSON(in) }
