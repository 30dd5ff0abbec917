package check

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	sigsyaml "sigs.k8s.io/yaml"
)

// imageFlag matches command-line flags whose value is an image, such as cert-manager's
// --acme-http01-solver-image=quay.io/jetstack/cert-manager-acmesolver:v1.16.2.
var imageFlag = regexp.MustCompile(`^--?[A-Za-z0-9][A-Za-z0-9-]*-image=(.+)$|^--?image=(.+)$`)

func argImages(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		for _, a := range l {
			if m := imageFlag.FindStringSubmatch(a); m != nil {
				out = append(out, m[1]+m[2])
			}
		}
	}
	return out
}

// valuesImages walks Helm values for images: string values of "image" keys, maps with
// "repository" and "tag" (or "digest", and an optional "registry"), and image flags in
// string values. A repository without tag or digest cannot be pre-pulled: bad is called.
func valuesImages(content string, use func(ref, where string), bad func(where, msg string)) {
	if strings.TrimSpace(content) == "" {
		return
	}
	var v any
	if err := sigsyaml.Unmarshal([]byte(content), &v); err != nil {
		bad("valuesContent", "invalid YAML: "+err.Error())
		return
	}
	walkValues(v, "valuesContent", use, bad)
}

func walkValues(v any, path string, use func(ref, where string), bad func(where, msg string)) {
	switch t := v.(type) {
	case map[string]any:
		if repo, ok := t["repository"].(string); ok && repo != "" {
			reg, _ := t["registry"].(string)
			if reg != "" {
				repo = strings.TrimSuffix(reg, "/") + "/" + repo
			}
			tag := scalar(t["tag"])
			digest, _ := t["digest"].(string)
			switch {
			case digest != "":
				use(repo+"@"+digest, path)
			case tag != "":
				use(repo+":"+tag, path)
			default:
				bad(path, fmt.Sprintf("image repository %s in Helm values has no tag or digest: the chart's default cannot be pre-pulled; set %s.tag", repo, path))
			}
		}
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if s, ok := t[k].(string); ok && k == "image" {
				use(s, path+".image")
				continue
			}
			walkValues(t[k], path+"."+k, use, bad)
		}
	case []any:
		for i, e := range t {
			walkValues(e, fmt.Sprintf("%s[%d]", path, i), use, bad)
		}
	case string:
		for _, ref := range argImages([]string{t}) {
			use(ref, path)
		}
	}
}

func scalar(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case float64:
		return fmt.Sprint(t)
	}
	return ""
}
