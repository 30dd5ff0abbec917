package sbom

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Component is something edgeimg put in the image besides the base's packages: the agent,
// K3s, container images.
type Component struct {
	Name    string
	Version string
	// PURL is its package URL (pkg:oci/…, pkg:golang/…, pkg:generic/…).
	PURL   string
	SHA256 string
	// Supplier is "Organization: …" or "" for NOASSERTION.
	Supplier string
}

// Input describes the image the document is about.
type Input struct {
	Name, Board, Version string
	Builder              string
	Epoch                time.Time
	// Base is the base image's source, as named in the spec, and its sha256.
	BaseName, BaseSHA256 string
	// Distro is the purl namespace of the base's packages ("debian" or "raspbian"…).
	Distro     string
	Packages   []Package
	Components []Component
}

// Document is an SPDX 2.3 document (the subset edgeimg writes).
type Document struct {
	SPDXVersion       string         `json:"spdxVersion"`
	DataLicense       string         `json:"dataLicense"`
	SPDXID            string         `json:"SPDXID"`
	Name              string         `json:"name"`
	DocumentNamespace string         `json:"documentNamespace"`
	CreationInfo      CreationInfo   `json:"creationInfo"`
	DocumentDescribes []string       `json:"documentDescribes"`
	Packages          []SPDXPackage  `json:"packages"`
	Relationships     []Relationship `json:"relationships"`
}

// CreationInfo says who made the document and when.
type CreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

// SPDXPackage is an SPDX package.
type SPDXPackage struct {
	Name             string        `json:"name"`
	SPDXID           string        `json:"SPDXID"`
	VersionInfo      string        `json:"versionInfo,omitempty"`
	Supplier         string        `json:"supplier,omitempty"`
	DownloadLocation string        `json:"downloadLocation"`
	FilesAnalyzed    bool          `json:"filesAnalyzed"`
	Homepage         string        `json:"homepage,omitempty"`
	SourceInfo       string        `json:"sourceInfo,omitempty"`
	LicenseConcluded string        `json:"licenseConcluded"`
	LicenseDeclared  string        `json:"licenseDeclared"`
	CopyrightText    string        `json:"copyrightText"`
	PrimaryPurpose   string        `json:"primaryPackagePurpose,omitempty"`
	Checksums        []Checksum    `json:"checksums,omitempty"`
	ExternalRefs     []ExternalRef `json:"externalRefs,omitempty"`
}

// Checksum is a package checksum.
type Checksum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

// ExternalRef is a package's external reference (its purl).
type ExternalRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

// Relationship links two SPDX elements.
type Relationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

const noAssertion = "NOASSERTION"

var idUnsafe = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

// New builds the document. It is deterministic: the same input gives the same bytes, and the
// document namespace derives from the input.
func New(in Input) *Document {
	imageID := "SPDXRef-Image"
	d := &Document{
		SPDXVersion: "SPDX-2.3",
		DataLicense: "CC0-1.0",
		SPDXID:      "SPDXRef-DOCUMENT",
		Name:        fmt.Sprintf("%s-%s %s", in.Name, in.Board, in.Version),
		CreationInfo: CreationInfo{
			Created:  in.Epoch.UTC().Format(time.RFC3339),
			Creators: []string{"Tool: edgeimg-" + in.Builder},
		},
		DocumentDescribes: []string{imageID},
	}
	d.Packages = append(d.Packages, SPDXPackage{
		Name: in.Name + "-" + in.Board, SPDXID: imageID, VersionInfo: in.Version,
		DownloadLocation: noAssertion, LicenseConcluded: noAssertion, LicenseDeclared: noAssertion,
		CopyrightText: noAssertion, PrimaryPurpose: "OPERATING-SYSTEM",
	})
	used := map[string]int{}
	id := func(prefix, name string) string {
		s := prefix + "-" + strings.Trim(idUnsafe.ReplaceAllString(name, "-"), "-")
		used[s]++
		if n := used[s]; n > 1 {
			s = fmt.Sprintf("%s-%d", s, n)
		}
		return s
	}
	add := func(p SPDXPackage) {
		d.Packages = append(d.Packages, p)
		d.Relationships = append(d.Relationships, Relationship{Element: imageID, Type: "CONTAINS", Related: p.SPDXID})
	}
	if in.BaseName != "" {
		p := SPDXPackage{Name: "base-image", SPDXID: "SPDXRef-BaseImage", DownloadLocation: downloadLocation(in.BaseName),
			LicenseConcluded: noAssertion, LicenseDeclared: noAssertion, CopyrightText: noAssertion,
			SourceInfo: "the disk image the build started from: " + in.BaseName}
		if in.BaseSHA256 != "" {
			p.Checksums = []Checksum{{Algorithm: "SHA256", Value: in.BaseSHA256}}
		}
		d.Packages = append(d.Packages, p)
		d.Relationships = append(d.Relationships, Relationship{Element: imageID, Type: "DESCENDANT_OF", Related: p.SPDXID})
	}
	distro := in.Distro
	if distro == "" {
		distro = "debian"
	}
	for _, p := range in.Packages {
		sp := SPDXPackage{
			Name: p.Name, SPDXID: id("SPDXRef-deb", p.Name+"-"+p.Architecture), VersionInfo: p.Version,
			DownloadLocation: noAssertion, LicenseConcluded: noAssertion, LicenseDeclared: noAssertion,
			CopyrightText: noAssertion, Homepage: p.Homepage, Supplier: supplier(p.Maintainer),
		}
		q := url.Values{}
		if p.Architecture != "" {
			q.Set("arch", p.Architecture)
		}
		if p.Source != "" && p.Source != p.Name {
			q.Set("upstream", p.Source)
			sp.SourceInfo = "built from source package " + p.Source
		}
		purl := fmt.Sprintf("pkg:deb/%s/%s@%s", distro, url.PathEscape(p.Name), url.PathEscape(p.Version))
		if len(q) > 0 {
			purl += "?" + q.Encode()
		}
		sp.ExternalRefs = []ExternalRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: purl}}
		add(sp)
	}
	comps := append([]Component(nil), in.Components...)
	sort.Slice(comps, func(i, j int) bool { return comps[i].Name < comps[j].Name })
	for _, c := range comps {
		sp := SPDXPackage{
			Name: c.Name, SPDXID: id("SPDXRef-component", c.Name), VersionInfo: c.Version,
			DownloadLocation: noAssertion, LicenseConcluded: noAssertion, LicenseDeclared: noAssertion,
			CopyrightText: noAssertion, Supplier: c.Supplier,
		}
		if c.SHA256 != "" {
			sp.Checksums = []Checksum{{Algorithm: "SHA256", Value: c.SHA256}}
		}
		if c.PURL != "" {
			sp.ExternalRefs = []ExternalRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: c.PURL}}
		}
		add(sp)
	}
	h := sha256.New()
	b, _ := json.Marshal(d)
	h.Write(b)
	d.DocumentNamespace = fmt.Sprintf("https://edgeimg.dev/spdx/%s-%s-%s-%s", url.PathEscape(in.Name), in.Board, url.PathEscape(in.Version), hex.EncodeToString(h.Sum(nil))[:16])
	return d
}

func supplier(maintainer string) string {
	if maintainer == "" {
		return ""
	}
	// SPDX: "Organization: name (email)"; Debian: "Name <email>".
	return "Organization: " + strings.NewReplacer("<", "(", ">", ")").Replace(maintainer)
}

func downloadLocation(s string) string {
	if strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://") {
		return s
	}
	return noAssertion
}

// JSON returns the document as indented JSON.
func (d *Document) JSON() []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	_ = enc.Encode(d)
	return b.Bytes()
}
