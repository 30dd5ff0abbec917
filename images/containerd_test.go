package images

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/internal/testutil"
)

// containerdConfig turns off what an import does not need and what a container without
// privileges cannot start (the CRI plugin, block-device snapshotters).
const containerdConfig = `version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
`

// startContainerd runs a private containerd (its own root, state and socket) for the test and
// returns its socket.
func startContainerd(t *testing.T) string {
	t.Helper()
	testutil.NeedTool(t, "containerd")
	testutil.NeedTool(t, "ctr")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("containerd needs root (CI runs the tests as root)")
		}
		t.Skip("containerd needs root")
	}
	// A short directory: a unix socket's path is limited to 107 bytes.
	dir, err := os.MkdirTemp("", "ctrd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	var log bytes.Buffer
	cmd := exec.Command("containerd", "--config", cfg, "--root", filepath.Join(dir, "root"),
		"--state", filepath.Join(dir, "state"), "--address", sock)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := exec.Command("ctr", "-a", sock, "version").Run(); err == nil {
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s within 30 s:\n%s", sock, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestArchiveImportsWithContainerd imports an air-gap archive with containerd's own importer,
// as K3s does at boot (`ctr images import --all-platforms` into the k8s.io namespace), and
// checks that every name the manifests may use resolves to the arm64 image, complete.
func TestArchiveImportsWithContainerd(t *testing.T) {
	sock := startContainerd(t)
	reg := newRegistry(t, nil)
	idx, imgs := multiArch(t, "amd64", "arm64")
	ref := reg.host() + "/rancher/mirrored-coredns-coredns:1.12.0"
	pushIndex(t, ref, idx)
	got, err := newTestPuller(t, t.TempDir()).Pull(context.Background(), []Request{{Ref: ref}})
	if err != nil {
		t.Fatal(err)
	}
	img := got[0]
	archive := filepath.Join(t.TempDir(), ArchiveName(img))
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteArchive(f, img); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	ctr := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ctr", append([]string{"-a", sock, "-n", "k8s.io"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	ctr("images", "import", "--all-platforms", "--no-unpack", archive)

	// `ctr images ls -q` lists the names; `ctr images check` says whether all content is there.
	names := strings.Fields(ctr("images", "ls", "-q"))
	arm := digestOf(t, imgs["arm64"])
	want := []string{ref, reg.host() + "/rancher/mirrored-coredns-coredns@" + digestOf(t, idx).String(),
		reg.host() + "/rancher/mirrored-coredns-coredns@" + arm.String()}
	sort.Strings(names)
	sort.Strings(want)
	if strings.Join(names, "\n") != strings.Join(want, "\n") {
		t.Fatalf("containerd imported the names\n%s\nwant\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	for _, line := range strings.Split(strings.TrimSpace(ctr("images", "ls")), "\n")[1:] {
		fields := strings.Fields(line)
		// REF TYPE DIGEST SIZE PLATFORMS LABELS
		if len(fields) < 5 {
			t.Fatalf("ctr images ls: unexpected line %q", line)
		}
		if fields[2] != arm.String() {
			t.Errorf("%s: containerd's target is %s, want the arm64 manifest %s", fields[0], fields[2], arm)
		}
		if !strings.Contains(fields[len(fields)-2]+" "+fields[len(fields)-1], "linux/arm64") {
			t.Errorf("%s: platforms %q, want linux/arm64", fields[0], line)
		}
	}
	check := ctr("images", "check")
	for _, line := range strings.Split(strings.TrimSpace(check), "\n")[1:] {
		// STATUS is "complete (N/N)" or "incomplete (n/N)".
		if !strings.Contains(line, " complete (") {
			t.Errorf("ctr images check: not all content is there: %s", line)
		}
	}
}
