package check

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"
)

// Object is one decoded Kubernetes object and where it came from.
type Object struct {
	// File is the manifest file, as given to Load or Decode.
	File string
	// Index is the 0-based index of the YAML document in File.
	Index int
	// GVK is the object's apiVersion and kind.
	GVK schema.GroupVersionKind
	// Object is the typed object (*appsv1.Deployment, *HelmChart, …).
	Object runtime.Object
	// Raw is the document as JSON.
	Raw []byte
}

// Meta returns the object's metadata.
func (o Object) Meta() metav1.Object {
	m, _ := o.Object.(metav1.Object)
	return m
}

// Namespace returns the object's namespace, "default" for a namespaced object without one
// and "" for cluster-scoped kinds.
func (o Object) Namespace() string {
	if clusterScoped[o.GVK.Kind] {
		return ""
	}
	if ns := o.Meta().GetNamespace(); ns != "" {
		return ns
	}
	return "default"
}

// String names the object: "Deployment smart-building/telemetry".
func (o Object) String() string {
	if ns := o.Namespace(); ns != "" {
		return o.GVK.Kind + " " + ns + "/" + o.Meta().GetName()
	}
	return o.GVK.Kind + " " + o.Meta().GetName()
}

var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "ClusterIssuer": true,
	"StorageClass": true, "PriorityClass": true, "PersistentVolume": true, "Node": true,
	"CSIDriver": true, "CSINode": true, "VolumeAttachment": true, "IngressClass": true,
}

// DecodeError is a document that is not valid YAML, not a known kind, or has fields the
// kind does not have.
type DecodeError struct {
	File  string
	Index int
	Err   error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("%s: document %d: %v", e.File, e.Index, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// maxDocument bounds one YAML document (the largest legitimate ones are CRDs).
const maxDocument = 8 << 20

// Decode decodes every document of a multi-document YAML file strictly: unknown fields,
// duplicate fields, unknown kinds and objects without a name are errors naming the file,
// the document index and the field. All errors are returned together (errors.Join).
func Decode(file string, data []byte) ([]Object, error) {
	var objs []Object
	var errs []error
	r := utilyaml.NewYAMLReader(bufio.NewReaderSize(bytes.NewReader(data), 64<<10))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, &DecodeError{file, i, fmt.Errorf("reading YAML: %w", err)})
			break
		}
		if len(doc) > maxDocument {
			errs = append(errs, &DecodeError{file, i, fmt.Errorf("document is larger than %d bytes", maxDocument)})
			continue
		}
		obj, ok, err := decodeDoc(doc)
		if err != nil {
			errs = append(errs, &DecodeError{file, i, err})
			continue
		}
		if ok {
			obj.File, obj.Index = file, i
			objs = append(objs, obj)
		}
	}
	return objs, errors.Join(errs...)
}

func decodeDoc(doc []byte) (Object, bool, error) {
	js, err := sigsyaml.YAMLToJSONStrict(doc)
	if err != nil {
		return Object{}, false, fmt.Errorf("invalid YAML: %w", err)
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || string(js) == "null" {
		return Object{}, false, nil // empty document, comments only
	}
	if js[0] != '{' {
		return Object{}, false, fmt.Errorf("not a Kubernetes object (a YAML mapping with apiVersion and kind)")
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return Object{}, false, fmt.Errorf("apiVersion/kind: %w", err)
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return Object{}, false, fmt.Errorf("missing apiVersion or kind")
	}
	gv, err := schema.ParseGroupVersion(tm.APIVersion)
	if err != nil {
		return Object{}, false, fmt.Errorf("apiVersion %q: %w", tm.APIVersion, err)
	}
	gvk := gv.WithKind(tm.Kind)
	obj, err := Scheme.New(gvk)
	if err != nil || strings.HasSuffix(tm.Kind, "List") {
		return Object{}, false, fmt.Errorf("unknown kind %q in apiVersion %q (supported: %s)", tm.Kind, tm.APIVersion, supportedKinds())
	}
	strict, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return Object{}, false, fmt.Errorf("%s: %w", gvk.Kind, err)
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return Object{}, false, fmt.Errorf("%s: %s", gvk.Kind, strings.Join(msgs, "; "))
	}
	o := Object{GVK: gvk, Object: obj, Raw: js}
	m := o.Meta()
	if m == nil || m.GetName() == "" {
		return Object{}, false, fmt.Errorf("%s: metadata.name is required", gvk.Kind)
	}
	return o, true, nil
}

func supportedKinds() string {
	seen := map[string]bool{}
	for gvk := range Scheme.AllKnownTypes() {
		if gvk.Version == "__internal" || strings.HasSuffix(gvk.Kind, "List") || strings.HasSuffix(gvk.Kind, "Options") ||
			gvk.Kind == "WatchEvent" || gvk.Kind == "Status" || gvk.Kind == "APIGroup" || gvk.Kind == "APIVersions" ||
			gvk.Kind == "APIResourceList" || gvk.Kind == "APIGroupList" || gvk.Kind == "Eviction" || gvk.Kind == "Binding" ||
			gvk.Kind == "RangeAllocation" || gvk.Kind == "SerializedReference" || gvk.Kind == "NodeProxyOptions" {
			continue
		}
		seen[gvk.GroupVersion().String()] = true
	}
	gvs := make([]string, 0, len(seen))
	for g := range seen {
		gvs = append(gvs, g)
	}
	sort.Strings(gvs)
	return "the kinds of " + strings.Join(gvs, ", ")
}

// Load decodes the manifests at paths: files, or directories whose *.yaml and *.yml files
// are read in lexical order (recursively). All errors are returned together.
func Load(paths []string) ([]Object, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("manifests: %w", err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("manifests: %w", err)
		}
	}
	var objs []Object
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("manifests: %w", err))
			continue
		}
		o, err := Decode(f, data)
		objs = append(objs, o...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return objs, errors.Join(errs...)
}
