// Package spec provides edgeimg.yaml, the declarative description of an image: its Go type,
// strict decoding with file:line errors, defaults, validation, and the JSON Schema generated
// from the type.
package spec
