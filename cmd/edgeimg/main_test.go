package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExitStatus(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	for _, tc := range []struct {
		name  string
		env   string
		args  []string
		code  int
		inErr string
	}{
		{"version", "", []string{"version"}, 0, ""},
		{"help", "", nil, 0, ""},
		{"unknown command", "", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown flag", "", []string{"build", "--frob"}, 2, "unknown flag: --frob"},
		{"extra argument", "", []string{"build", "x"}, 2, "build takes no arguments"},
		{"inspect without image", "", []string{"inspect"}, 2, "inspect takes one argument"},
		{"bad SOURCE_DATE_EPOCH", "-5", []string{"build", "-c", missing}, 2, `SOURCE_DATE_EPOCH "-5"`},
		{"missing config", "", []string{"build", "-c", missing}, 1, missing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SOURCE_DATE_EPOCH", tc.env)
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, errb.String())
			}
			if tc.inErr != "" && !strings.Contains(errb.String(), tc.inErr) {
				t.Errorf("stderr %q does not contain %q", errb.String(), tc.inErr)
			}
			if tc.code != 0 && !strings.HasPrefix(errb.String(), "edgeimg: ") {
				t.Errorf("stderr %q: want an edgeimg: prefix", errb.String())
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
		t.Error("a failed build created an output directory")
	}
}
