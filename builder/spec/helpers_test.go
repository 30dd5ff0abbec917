package spec

import (
	"errors"
	"strings"
	"testing"
)

// Real keys made with ssh-keygen for these tests.
const (
	keyEd25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID5ORs91boAmcEZxXT4FViCT6ea0IyPW5F2oKsOgdJDI ops@example"
	keyECDSA   = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBGgrdOKNZIIBuSTfNPIUI5yzJNVPb1jiOzG/n9p59d0ffhrcerxIjYrIuB0dtYsNpmwmNy7fD0f75nkllm1940A= ci@example"
	// openssl passwd -6 -salt saltsalt edgeimg
	hashSHA512 = "$6$saltsalt$W1vINO50f80LDag5SwCJAj6N0c/GB3PQxkdowRzW3ng5HJMV780jTRqmVTSpjc6jn60qhUBkD0TXDOjP4iKxd1"
	sha        = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// testDefaults are the defaults of a Raspberry Pi 4 sized board.
var testDefaults = Defaults{BootSize: 256 * MiB, SystemSize: 2 * GiB, DataMinSize: 1 * GiB}

// errLines splits a joined error into its lines.
func errLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

// wantErrs checks that err has exactly one line containing each of want, in order.
func wantErrs(t *testing.T, err error, want ...string) {
	t.Helper()
	got := errLines(err)
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(got), len(want), err)
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("error %d is\n\t%s\nwant it to contain\n\t%s", i, got[i], want[i])
		}
	}
}

// fieldErrors returns the FieldErrors in a joined error.
func fieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	var out []*FieldError
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %v is not a joined error", err)
	}
	for _, e := range j.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %v is not a *FieldError", e)
		}
		out = append(out, fe)
	}
	return out
}
