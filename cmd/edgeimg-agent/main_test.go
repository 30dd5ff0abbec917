package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/internal/testutil"
)

const partuuid = "5eed1e55-07"

// fakeCard has sfdisk write the image's layout (132 MiB, data partition 64 MiB at sector
// 139264) on a card of the given size, and lays out a directory like /dev and /sys around it.
func fakeCard(t *testing.T, size int64) string {
	t.Helper()
	root := t.TempDir()
	image := filepath.Join(root, "dev/mmcblk0")
	sysDisk := filepath.Join(root, "sys/devices/platform/mmc0/block/mmcblk0")
	for _, d := range []string{filepath.Join(root, "dev/disk/by-partuuid"), filepath.Join(sysDisk, "mmcblk0p7"), filepath.Join(root, "sys/class/block")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.WriteFile(filepath.Join(sysDisk, "mmcblk0p7/partition"), []byte("7\n"), 0o644))
	must(t, os.Symlink("../../mmcblk0p7", filepath.Join(root, "dev/disk/by-partuuid", partuuid)))
	must(t, os.Symlink("../../devices/platform/mmc0/block/mmcblk0/mmcblk0p7", filepath.Join(root, "sys/class/block/mmcblk0p7")))
	must(t, os.WriteFile(image, nil, 0o644))
	must(t, os.Truncate(image, 132<<20))
	cmd := exec.Command(testutil.NeedTool(t, "sfdisk"), "--no-reread", "--no-tell-kernel", image)
	cmd.Stdin = strings.NewReader(`label: dos
label-id: 0x5eed1e55
start=8192, size=8192, type=c, bootable
start=16384, size=16384, type=c
start=32768, size=16384, type=c
start=49152, size=221184, type=f
start=57344, size=32768, type=83
start=98304, size=32768, type=83
start=139264, size=131072, type=83
`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	must(t, os.Truncate(image, size))
	return root
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// execute runs the agent's command line in process and returns its output and exit code.
func execute(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := NewRootCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		code = report(&errOut, err)
	}
	return out.String(), errOut.String(), code
}

func TestGrowData(t *testing.T) {
	root := fakeCard(t, 1<<30)
	disk := filepath.Join(root, "dev/mmcblk0")
	out, errOut, code := execute(t, "grow-data", "--partuuid", partuuid, "--root", root)
	want := fmt.Sprintf("partition 7 of %s grown from 67108864 to %d bytes (card: 1073741824 bytes)\n", disk, 1<<30-139264*512)
	if code != 0 || out != want {
		t.Fatalf("first run: exit %d, %q, stderr %q; want %q", code, out, errOut, want)
	}
	dump := testutil.Run(t, "sfdisk", "--dump", disk)
	for _, line := range []string{"start=       49152, size=     2048000, type=f", "start=      139264, size=     1957888, type=83"} {
		if !strings.Contains(dump, line) {
			t.Errorf("sfdisk --dump has no %q:\n%s", line, dump)
		}
	}
	out, errOut, code = execute(t, "grow-data", "--partuuid", partuuid, "--root", root)
	want = fmt.Sprintf("partition 7 of %s already fills the card (%d of 1073741824 bytes): nothing to do\n", disk, 1<<30-139264*512)
	if code != 0 || out != want {
		t.Errorf("second run: exit %d, %q, stderr %q; want %q", code, out, errOut, want)
	}
}

func TestGrowDataCardTooSmall(t *testing.T) {
	root := fakeCard(t, 100<<20)
	out, errOut, code := execute(t, "grow-data", "--partuuid", partuuid, "--root", root)
	if code != exitCardTooSmall || out != "" || !strings.HasPrefix(errOut, "edgeimg-agent: ") ||
		!strings.Contains(errOut, "the card has 104857600 bytes (100.0 MiB) but the image's layout needs 138412032 (132.0 MiB): write the image to a card of at least 138412032 bytes (132.0 MiB)") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestGrowDataUsage(t *testing.T) {
	for _, args := range [][]string{{"grow-data"}, {"grow-data", "--partuuid", "nope"}, {"grow-data", "extra", "--partuuid", partuuid}} {
		if _, errOut, code := execute(t, args...); code != exitError || errOut == "" {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
	}
}

func TestVersion(t *testing.T) {
	if out, _, code := execute(t, "version"); code != 0 || out != "edgeimg-agent dev\n" {
		t.Errorf("version: exit %d, %q", code, out)
	}
}

func goTool(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the agent")
	}
	// The go command on PATH (make test builds with -trimpath, where runtime.GOROOT is empty).
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := runtime.GOROOT(); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	t.Fatal("no go command on PATH")
	return ""
}

// TestBuildArm64 builds the agent as it ships, static for the Raspberry Pi, and checks that
// -ldflags sets its version.
func TestBuildArm64(t *testing.T) {
	gobin := goTool(t)
	dir := t.TempDir()
	for _, target := range []struct{ goarch, name string }{{"arm64", "agent-arm64"}, {runtime.GOARCH, "agent"}} {
		cmd := exec.Command(gobin, "build", "-trimpath", "-ldflags", "-X main.version=v9.8.7", "-o", filepath.Join(dir, target.name), ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+target.goarch)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build for linux/%s: %v\n%s", target.goarch, err, out)
		}
	}
	if runtime.GOOS != "linux" {
		return
	}
	out, err := exec.Command(filepath.Join(dir, "agent"), "version").CombinedOutput()
	if err != nil || string(out) != "edgeimg-agent v9.8.7\n" {
		t.Errorf("version of the built agent: %q, %v", out, err)
	}
}

// TestDependencies keeps the agent small and free of the builder's dependencies: outside the
// standard library it may only use these.
func TestDependencies(t *testing.T) {
	gobin := goTool(t)
	allowed := []string{"github.com/edgeimg/edgeimg/agent/", "github.com/edgeimg/edgeimg/fleet/api", "github.com/spf13/cobra", "github.com/spf13/pflag", "golang.org/x/sys/", "gopkg.in/yaml.v3",
		// The device side of updates: the bundle format, the chunk index and its chunker, the
		// board's slot switch; hw's board interface names builder/tree's types (standard
		// library only).
		"github.com/edgeimg/edgeimg/ota/apply", "github.com/edgeimg/edgeimg/ota/bundle", "github.com/edgeimg/edgeimg/ota/delta", "github.com/restic/chunker",
		"github.com/edgeimg/edgeimg/hw", "github.com/edgeimg/edgeimg/hw/rpi4", "github.com/edgeimg/edgeimg/builder/tree"}
	// builder/tree is the one builder package allowed (see above).
	treeOK := func(pkg string) bool { return pkg == "github.com/edgeimg/edgeimg/builder/tree" }
	// Named here so that a widened allow-list cannot let them in: the builder's and the fleet
	// server's dependencies.
	forbidden := []string{"github.com/edgeimg/edgeimg/builder", "github.com/diskfs/go-diskfs", "github.com/Microsoft/hcsshim", "github.com/google/go-containerregistry",
		"github.com/edgeimg/edgeimg/fleet/store", "github.com/edgeimg/edgeimg/fleet/pki", "github.com/edgeimg/edgeimg/fleet/client", "modernc.org/", "github.com/jackc/", "github.com/prometheus/"}
	cmd := exec.Command(gobin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "github.com/edgeimg/edgeimg/cmd/edgeimg-agent" {
			continue
		}
		if !slices.ContainsFunc(allowed, func(a string) bool { return pkg == strings.TrimSuffix(a, "/") || strings.HasPrefix(pkg, a) }) {
			t.Errorf("the agent depends on %s", pkg)
		}
		if pkg == "github.com/edgeimg/edgeimg/fleet" || (!treeOK(pkg) && slices.ContainsFunc(forbidden, func(f string) bool { return strings.HasPrefix(pkg, f) })) {
			t.Errorf("the agent depends on %s, which is the builder's or the fleet server's", pkg)
		}
	}
}
