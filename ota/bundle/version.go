package bundle

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxVersionLen is the longest version string accepted (the spec's limit).
const MaxVersionLen = 64

// ParseVersion splits a release version ("1", "2.3", "2024.11.25") into its numbers: dot
// separated decimals of at most 18 digits each.
func ParseVersion(v string) ([]uint64, error) {
	if v == "" || len(v) > MaxVersionLen {
		return nil, fmt.Errorf("version %q: must be 1 to %d characters", v, MaxVersionLen)
	}
	parts := strings.Split(v, ".")
	out := make([]uint64, len(parts))
	for i, p := range parts {
		if p == "" || len(p) > 18 || strings.TrimLeft(p, "0123456789") != "" {
			return nil, fmt.Errorf("version %q: %q is not a decimal number of 1 to 18 digits", v, p)
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("version %q: %w", v, err)
		}
		out[i] = n
	}
	return out, nil
}

// CompareVersions compares two versions numerically, component by component, a missing
// component counting as 0 ("1.0" equals "1", "1.10" is above "1.9"). It returns -1, 0 or +1.
func CompareVersions(a, b string) (int, error) {
	x, err := ParseVersion(a)
	if err != nil {
		return 0, err
	}
	y, err := ParseVersion(b)
	if err != nil {
		return 0, err
	}
	for i := 0; i < max(len(x), len(y)); i++ {
		var p, q uint64
		if i < len(x) {
			p = x[i]
		}
		if i < len(y) {
			q = y[i]
		}
		switch {
		case p < q:
			return -1, nil
		case p > q:
			return 1, nil
		}
	}
	return 0, nil
}
