package grow

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestUnitEscapePath(t *testing.T) {
	cases := map[string]string{
		"/dev/disk/by-partuuid/5eed1e55-07": `dev-disk-by\x2dpartuuid-5eed1e55\x2d07`,
		"/":                                 "-",
		"":                                  "-",
		"/var":                              "var",
		"//var/./lib//":                     "var-lib",
		"/.hidden/a.b":                      `\x2ehidden-a.b`,
		"/a b/ü\\c:d_e":                     `a\x20b-\xc3\xbc\x5cc:d_e`,
	}
	for in, want := range cases {
		if got := UnitEscapePath(in); got != want {
			t.Errorf("UnitEscapePath(%q) = %q, want %q", in, got, want)
		}
	}
	// The same as systemd's own, where it is installed.
	escape, err := exec.LookPath("systemd-escape")
	if err != nil {
		t.Log("systemd-escape is not installed; compared with the expected values only")
		return
	}
	for in := range cases {
		if in == "" {
			continue // systemd-escape refuses an empty path
		}
		out, err := exec.Command(escape, "--path", in).Output()
		if err != nil {
			t.Fatalf("systemd-escape --path %q: %v", in, err)
		}
		if got, want := UnitEscapePath(in), strings.TrimSpace(string(out)); got != want {
			t.Errorf("UnitEscapePath(%q) = %q, systemd-escape says %q", in, got, want)
		}
	}
}

func TestGrowUnit(t *testing.T) {
	u := GrowUnit("5EED1E55-07")
	dev := `dev-disk-by\x2dpartuuid-5eed1e55\x2d07`
	for _, line := range []string{
		"DefaultDependencies=no",
		"After=" + dev + ".device",
		`Wants=dev-disk-by\x2dpartuuid-5eed1e55\x2d01.device`,
		`After=dev-disk-by\x2dpartuuid-5eed1e55\x2d01.device`,
		"Before=systemd-makefs@" + dev + ".service systemd-fsck@" + dev + ".service var.mount",
		"Type=oneshot",
		"RemainAfterExit=yes",
		"ExecStart=/usr/local/bin/edgeimg-agent grow-data --partuuid 5eed1e55-07",
		"StandardOutput=journal+console",
		"StandardError=journal+console",
		"OnFailure=emergency.target",
		"RequiredBy=var.mount systemd-makefs@" + dev + ".service",
	} {
		if !slices.Contains(strings.Split(u, "\n"), line) {
			t.Errorf("the unit has no line %q:\n%s", line, u)
		}
	}
	for _, l := range strings.Split(u, "\n") {
		if strings.HasPrefix(l, "FailureAction=") || strings.HasPrefix(l, "SuccessAction=") {
			t.Errorf("the unit reboots or powers off: %q", l)
		}
	}
	if got, want := GrowUnitRequiredBy("5eed1e55-07"), []string{"var.mount", "systemd-makefs@" + dev + ".service"}; !slices.Equal(got, want) {
		t.Errorf("GrowUnitRequiredBy = %q, want %q", got, want)
	}
}

func TestGrowUnitPanicsOnBadPARTUUID(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic for a PARTUUID with a newline")
		}
	}()
	GrowUnit("5eed1e55-07\nExecStartPre=/bin/sh")
}

// TestGrowUnitWithSystemd has systemd check the unit and enable it in a directory: the
// links it makes must be those GrowUnitRequiredBy tells the builder to make.
func TestGrowUnitWithSystemd(t *testing.T) {
	analyze, err1 := exec.LookPath("systemd-analyze")
	systemctl, err2 := exec.LookPath("systemctl")
	if err1 != nil || err2 != nil {
		t.Skip("systemd is not installed")
	}
	root := t.TempDir()
	unitDir := filepath.Join(root, "etc/systemd/system")
	mustWrite(t, filepath.Join(unitDir, GrowUnitName), GrowUnit(testPARTUUID))
	mustWrite(t, filepath.Join(root, AgentPath), "#!/bin/sh\n")
	if err := os.Chmod(filepath.Join(root, AgentPath), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--root="+root, GrowUnitName).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	if out, err := exec.Command(systemctl, "--root="+root, "enable", GrowUnitName).CombinedOutput(); err != nil {
		t.Fatalf("systemctl enable: %v\n%s", err, out)
	}
	var got []string
	err = filepath.WalkDir(unitDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.Type()&os.ModeSymlink == 0 {
			return err
		}
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if filepath.Base(p) != GrowUnitName || target != "/etc/systemd/system/"+GrowUnitName {
			t.Errorf("unexpected link %s -> %s", p, target)
		}
		got = append(got, strings.TrimSuffix(filepath.Base(filepath.Dir(p)), ".requires"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(GrowUnitRequiredBy(testPARTUUID)))
	if !slices.Equal(got, want) {
		t.Errorf("systemctl enable made links in %q, GrowUnitRequiredBy says %q", got, want)
	}
}
