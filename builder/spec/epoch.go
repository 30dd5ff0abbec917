package spec

import (
	"fmt"
	"strconv"
	"time"
)

// SourceDateEpoch parses the value of the SOURCE_DATE_EPOCH environment variable: seconds
// since 1970-01-01 00:00:00 UTC written as decimal digits only (no sign, no spaces, no
// fraction). An empty value means it is not set: the zero time and false. Anything else
// that is not such a number, or does not fit in an int64, is an error.
func SourceDateEpoch(env string) (time.Time, bool, error) {
	if env == "" {
		return time.Time{}, false, nil
	}
	for _, c := range env {
		if c < '0' || c > '9' {
			return time.Time{}, false, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a number of seconds since 1970-01-01: decimal digits only", short(env))
		}
	}
	n, err := strconv.ParseInt(env, 10, 64)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("SOURCE_DATE_EPOCH %q is too large", short(env))
	}
	return time.Unix(n, 0).UTC(), true, nil
}
