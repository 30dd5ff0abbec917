package spec

import (
	"strings"
	"testing"
	"time"
)

func TestSourceDateEpoch(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
		set  bool
		err  string
	}{
		{"", time.Time{}, false, ""},
		{"0", time.Unix(0, 0).UTC(), true, ""},
		{"1700000000", time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC), true, ""},
		{"0001700000000", time.Unix(1700000000, 0).UTC(), true, ""},
		{"9223372036854775807", time.Unix(1<<63-1, 0).UTC(), true, ""},
		{"9223372036854775808", time.Time{}, false, "is too large"},
		{"-1", time.Time{}, false, "decimal digits only"},
		{"+1", time.Time{}, false, "decimal digits only"},
		{" 1", time.Time{}, false, "decimal digits only"},
		{"1\n", time.Time{}, false, "decimal digits only"},
		{"1.5", time.Time{}, false, "decimal digits only"},
		{"1e9", time.Time{}, false, "decimal digits only"},
		{"0x10", time.Time{}, false, "decimal digits only"},
		{"١٢٣", time.Time{}, false, "decimal digits only"}, // Arabic-Indic digits
		{"yesterday", time.Time{}, false, `SOURCE_DATE_EPOCH "yesterday" is not a number of seconds since 1970-01-01`},
	} {
		got, set, err := SourceDateEpoch(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("SourceDateEpoch(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			if set {
				t.Errorf("SourceDateEpoch(%q) reported set with an error", tc.in)
			}
			continue
		}
		if err != nil || set != tc.set || !got.Equal(tc.want) || got.Location() != time.UTC {
			t.Errorf("SourceDateEpoch(%q) = %v, %v, %v; want %v, %v", tc.in, got, set, err, tc.want, tc.set)
		}
	}
}
