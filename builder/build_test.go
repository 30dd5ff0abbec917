package builder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/spec"
	_ "github.com/edgeimg/edgeimg/hw/rpi4"
	"github.com/edgeimg/edgeimg/internal/basegen"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite testdata/golden.sha256")

const testEpoch = 1700000000

// fixtures are shared by the tests: a generated base image and a stand-in agent binary.
var fixtures struct {
	once  sync.Once
	dir   string
	base  string
	agent string
	err   error
}

func setup(t testing.TB) (base, agent string) {
	t.Helper()
	testutil.NeedTool(t, "mke2fs")
	testutil.NeedTool(t, "mkfs.vfat")
	testutil.NeedTool(t, "sfdisk")
	testutil.NeedTool(t, "mcopy")
	fixtures.once.Do(func() {
		fixtures.dir, fixtures.err = os.MkdirTemp("", "edgeimg-builder-test-")
		if fixtures.err != nil {
			return
		}
		fixtures.base = filepath.Join(fixtures.dir, "base.img")
		fixtures.err = basegen.Generate(context.Background(), fixtures.base, basegen.Options{Small: true, Seed: 7})
		if fixtures.err != nil {
			return
		}
		// A stand-in for the agent binary: the golden digest must not change with every
		// change of the agent's code or of the Go toolchain. TestAgentCrossBuild covers the real one.
		fixtures.agent = filepath.Join(fixtures.dir, "edgeimg-agent")
		fixtures.err = os.WriteFile(fixtures.agent, []byte("#!/bin/sh\n# edgeimg-agent test stand-in\n"), 0o755)
	})
	if fixtures.err != nil {
		t.Fatal(fixtures.err)
	}
	return fixtures.base, fixtures.agent
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if fixtures.dir != "" {
		os.RemoveAll(fixtures.dir)
	}
	os.Exit(code)
}

// testSpec writes a spec for base into dir and loads it as the CLI does.
func testSpec(t testing.TB, dir, base, extra string) *spec.Spec {
	t.Helper()
	overlay := filepath.Join(dir, "overlay")
	must(t, os.MkdirAll(filepath.Join(overlay, "etc/app"), 0o755))
	must(t, os.WriteFile(filepath.Join(overlay, "etc/app/app.conf"), []byte("listen=:8080\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(overlay, "usr/local/bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(overlay, "usr/local/bin/hello"), []byte("#!/bin/sh\necho hello\n"), 0o755))
	must(t, os.WriteFile(filepath.Join(overlay, ".edgeimg-attrs.yaml"), []byte("- path: /etc/app\n  recursive: true\n  group: adm\n  mode: \"0640\"\n"), 0o644))
	text := fmt.Sprintf(`name: gw
board: rpi4
version: "7"
hostname: gw-test
base:
  image: %s
overlays: [overlay]
users:
  - name: ops
    groups: [sudo]
    sshAuthorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHMvdcj6hbtW3ZPwLTYgo2aNQS22DapHzrFhHBmU2PAY ops@test"]
layout:
  bootSize: 64MiB
  systemSize: 256MiB
  dataMinSize: 64MiB
output:
  dir: out
  compress: zstd
%s`, base, extra)
	p := filepath.Join(dir, "edgeimg.yaml")
	must(t, os.WriteFile(p, []byte(text), 0o644))
	s, err := spec.Load(p)
	must(t, err)
	s.SetDefaults(spec.Defaults{BootSize: 256 << 20, SystemSize: 2 << 30, DataMinSize: 1 << 30, Compress: "zstd", OutputDir: filepath.Join(dir, "out"), Version: "0"})
	must(t, s.Validate())
	return s
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func build(t testing.TB, dir string, extra string, opts ...Option) (*Result, error) {
	t.Helper()
	base, agent := setup(t)
	s := testSpec(t, dir, base, extra)
	opts = append([]Option{WithAgent(agent), WithCacheDir(filepath.Join(dir, "cache")), WithEpoch(time.Unix(testEpoch, 0))}, opts...)
	return Build(context.Background(), s, opts...)
}

// extract copies partition n of img into its own file for the filesystem tools.
func extract(t *testing.T, img string, start, size int64) string {
	t.Helper()
	in, err := os.Open(img)
	must(t, err)
	defer in.Close()
	p := filepath.Join(t.TempDir(), fmt.Sprintf("part-%d", start))
	out, err := os.Create(p)
	must(t, err)
	defer out.Close()
	_, err = io.Copy(out, io.NewSectionReader(in, start, size))
	must(t, err)
	return p
}

type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		Partitions []struct {
			Node  string `json:"node"`
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	res, err := build(t, dir, "")
	must(t, err)
	out := filepath.Join(dir, "out")
	for _, f := range []string{"gw-rpi4.img", "gw-rpi4.img.zst", "SHA256SUMS", "gw-rpi4.report.json", "gw-rpi4.spdx.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("output %s: %v", f, err)
		}
	}
	if entries, _ := os.ReadDir(out); len(entries) != 5 {
		t.Errorf("output directory holds %d entries, want exactly the 5 outputs", len(entries))
	}
	// The SBOM lists the base's Debian packages (from its dpkg status) and the agent.
	var bom struct {
		SPDXVersion string `json:"spdxVersion"`
		Packages    []struct {
			Name         string `json:"name"`
			ExternalRefs []struct {
				Locator string `json:"referenceLocator"`
			} `json:"externalRefs"`
		} `json:"packages"`
	}
	b, err := os.ReadFile(filepath.Join(out, "gw-rpi4.spdx.json"))
	must(t, err)
	must(t, json.Unmarshal(b, &bom))
	var names []string
	for _, p := range bom.Packages {
		names = append(names, p.Name)
	}
	if bom.SPDXVersion != "SPDX-2.3" || !strings.Contains(strings.Join(names, " "), "edgeimg-agent") || len(bom.Packages) < 8 ||
		!strings.Contains(string(b), "pkg:deb/debian/bash@") {
		t.Errorf("SBOM: version %s, packages %v", bom.SPDXVersion, names)
	}
	img := res.Image

	// The partition table, as sfdisk reads it.
	var tbl sfdiskTable
	must(t, json.Unmarshal([]byte(testutil.Run(t, "sfdisk", "--json", img)), &tbl))
	pt := tbl.PartitionTable
	if pt.Label != "dos" || len(pt.Partitions) != 7 {
		t.Fatalf("sfdisk: label %s, %d partitions: %+v", pt.Label, len(pt.Partitions), pt)
	}
	wantTypes := []string{"c", "c", "c", "f", "83", "83", "83"}
	for i, p := range pt.Partitions {
		if p.Type != wantTypes[i] {
			t.Errorf("partition %d type %s, want %s", i+1, p.Type, wantTypes[i])
		}
		if i != 3 && p.Start%8192 != 0 {
			t.Errorf("partition %d starts at sector %d: not 4 MiB aligned", i+1, p.Start)
		}
	}
	sig := strings.TrimPrefix(pt.ID, "0x")
	if sig == "00000000" || sig != strings.TrimPrefix(res.Report.DiskSignature, "0x") {
		t.Errorf("disk signature %s (report %s)", pt.ID, res.Report.DiskSignature)
	}
	if out := testutil.Run(t, "sfdisk", "--verify", img); strings.Contains(strings.ToLower(out), "warn") {
		t.Errorf("sfdisk --verify: %s", out)
	}

	part := func(i int) string {
		p := pt.Partitions[i-1]
		return extract(t, img, p.Start*512, p.Size*512)
	}
	// FAT partitions: fsck-clean, with the slot switch and the slot's boot files.
	cfg, bootA, bootB := part(1), part(2), part(3)
	for _, p := range []string{cfg, bootA, bootB} {
		testutil.Run(t, "fsck.vfat", "-n", p)
	}
	auto := testutil.Run(t, "mtype", "-i", cfg, "::/autoboot.txt")
	if !strings.HasPrefix(auto, "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n") || len(auto) != 512 {
		t.Errorf("autoboot.txt (%d bytes):\n%s", len(auto), auto)
	}
	cmdline := testutil.Run(t, "mtype", "-i", bootA, "::/cmdline.txt")
	for _, want := range []string{"root=PARTUUID=" + sig + "-05 ", " ro ", "cgroup_memory=1", "cgroup_enable=memory", "panic=10"} {
		if !strings.Contains(cmdline, want) {
			t.Errorf("cmdline.txt lacks %q: %s", want, cmdline)
		}
	}
	if !strings.Contains(cmdline, " init=/usr/lib/edgeimg/init") || strings.Count(cmdline, "init=") != 1 {
		t.Errorf("cmdline.txt does not run edgeimg's early init (and only it): %s", cmdline)
	}
	for _, bad := range []string{"raspberrypi-sys-mods", "fsck.repair", sig + "-02"} {
		if strings.Contains(cmdline, bad) {
			t.Errorf("cmdline.txt keeps %q: %s", bad, cmdline)
		}
	}
	if c := testutil.Run(t, "mtype", "-i", bootA, "::/config.txt"); !strings.Contains(c, "dtparam=watchdog=on") {
		t.Errorf("config.txt has no watchdog:\n%s", c)
	}
	if ls := testutil.Run(t, "mdir", "-b", "-i", bootA, "::/overlays"); !strings.Contains(ls, ".dtbo") {
		t.Errorf("boot A has no overlays/*.dtbo:\n%s", ls)
	}

	// The system slot: e2fsck-clean ext4 with the base's metadata and the builder's additions.
	sys := part(5)
	testutil.Run(t, "e2fsck", "-fn", sys)
	stat := func(p string) string { return testutil.Run(t, "debugfs", "-R", "stat "+p, sys) }
	if s := stat("/usr/bin/sudo"); !strings.Contains(s, "Mode:  04755") || !strings.Contains(s, "User:     0") {
		t.Errorf("sudo lost its setuid bit or owner:\n%s", s)
	}
	if s := testutil.Run(t, "debugfs", "-R", "ea_list /usr/bin/ping", sys); !strings.Contains(s, "security.capability") {
		t.Errorf("ping lost security.capability:\n%s", s)
	}
	if s := stat("/dev/null"); !strings.Contains(s, "Type: character special") {
		t.Errorf("/dev/null:\n%s", s)
	}
	if s := stat("/home/ops/.ssh/authorized_keys"); !strings.Contains(s, "User:  1000") || !strings.Contains(s, "Mode:  0600") {
		t.Errorf("authorized_keys:\n%s", s)
	}
	if s := stat("/etc/app/app.conf"); !strings.Contains(s, "Mode:  0640") || !strings.Contains(s, "Group:     4") {
		t.Errorf("overlay attributes not applied:\n%s", s)
	}
	if s := stat("/usr/local/bin/hello"); !strings.Contains(s, "Mode:  0755") {
		t.Errorf("overlay executable:\n%s", s)
	}
	if s := stat("/usr/local/bin/edgeimg-agent"); !strings.Contains(s, "Mode:  0755") {
		t.Errorf("agent:\n%s", s)
	}
	if s := stat("/usr/lib/clock-epoch"); !strings.Contains(s, fmt.Sprintf("%x", testEpoch)) {
		t.Errorf("clock-epoch mtime is not the epoch:\n%s", s)
	}
	for _, l := range strings.Split(testutil.Run(t, "debugfs", "-R", "ls -p /var", sys), "\n") {
		// /INODE/MODE/UID/GID/NAME/SIZE/
		if f := strings.Split(l, "/"); len(f) > 5 && f[1] != "0" && f[5] != "." && f[5] != ".." {
			t.Errorf("the slot ships /var/%s, hidden by the data partition", f[5])
		}
	}
	fstab := testutil.Run(t, "debugfs", "-R", "cat /etc/fstab", sys)
	if !strings.Contains(fstab, "PARTUUID="+sig+"-07 /var ext4") {
		t.Errorf("fstab:\n%s", fstab)
	}
	if s := testutil.Run(t, "dumpe2fs", "-h", sys); !strings.Contains(s, "Filesystem volume name:   edgeimg-sys") {
		t.Errorf("system label:\n%s", s)
	}

	// The compressed image decompresses with the zstd CLI to the raw image; SHA256SUMS checks.
	testutil.NeedTool(t, "zstd")
	dec := filepath.Join(t.TempDir(), "dec.img")
	testutil.Run(t, "zstd", "-q", "-d", res.Compressed, "-o", dec)
	if a, b := fileSum(t, dec), fileSum(t, img); a != b {
		t.Errorf("zstd -d gives %s, raw image is %s", a, b)
	}
	cmd := exec.Command(testutil.NeedTool(t, "sha256sum"), "-c", "SHA256SUMS")
	cmd.Dir = out
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, b)
	}
	// The raw image is sparse: empty slot B and data take no disk space.
	var st syscallStat
	if blocks, size := diskUsage(t, img, &st); blocks*2 > size {
		t.Errorf("image uses %d of %d bytes on disk: not sparse", blocks, size)
	}

	// The shared image checker agrees.
	if checker, _ := filepath.Abs("../../shared/tools/check-image"); fileExists(checker) {
		c := exec.Command(checker, img)
		if b, err := c.CombinedOutput(); err != nil {
			t.Errorf("check-image: %v\n%s", err, b)
		}
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func fileSum(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	must(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

// TestReproducible builds twice, with one and with two threads, and compares the outputs with
// each other and with the golden digests (regenerate with go test -run Reproducible -update).
func TestReproducible(t *testing.T) {
	var sums [2]string
	for i, procs := range []int{1, 2} {
		prev := runtime.GOMAXPROCS(procs)
		dir := t.TempDir()
		res, err := build(t, dir, "")
		runtime.GOMAXPROCS(prev)
		must(t, err)
		sums[i] = fmt.Sprintf("%s  gw-rpi4.img\n%s  gw-rpi4.img.zst\n%s  gw-rpi4.spdx.json\n",
			fileSum(t, res.Image), fileSum(t, res.Compressed), fileSum(t, filepath.Join(dir, "out", "gw-rpi4.spdx.json")))
	}
	if sums[0] != sums[1] {
		t.Fatalf("GOMAXPROCS=1 and 2 differ:\n%s\n%s", sums[0], sums[1])
	}
	golden := filepath.Join("testdata", "golden.sha256")
	if *update {
		must(t, os.MkdirAll("testdata", 0o755))
		must(t, os.WriteFile(golden, []byte(sums[0]), 0o644))
	}
	want, err := os.ReadFile(golden)
	must(t, err)
	if string(want) != sums[0] {
		t.Errorf("outputs differ from the golden digests (if the change is intended: go test ./builder -run Reproducible -update):\n got %s\nwant %s", sums[0], want)
	}
}

// TestBadInput: each mistake gets one clear error naming the culprit, and no output is left.
func TestBadInput(t *testing.T) {
	base, _ := setup(t)
	truncated := filepath.Join(t.TempDir(), "truncated.img")
	b, err := os.ReadFile(base)
	must(t, err)
	must(t, os.WriteFile(truncated, b[:len(b)/3], 0o644))
	garbage := filepath.Join(t.TempDir(), "garbage.img")
	must(t, os.WriteFile(garbage, bytes.Repeat([]byte("edgeimg!"), 1<<16), 0o644))

	cases := []struct {
		name string
		mod  func(s *spec.Spec)
		opts []Option
		want string
	}{
		{"missing base", func(s *spec.Spec) { s.Base.Image = "/nonexistent/base.img" }, nil, "/nonexistent/base.img"},
		{"wrong checksum", func(s *spec.Spec) { s.Base.SHA256 = strings.Repeat("0", 64) }, nil, "sha256"},
		{"truncated base", func(s *spec.Spec) { s.Base.Image = truncated }, nil, "truncated.img"},
		{"not a disk image", func(s *spec.Spec) { s.Base.Image = garbage }, nil, "garbage.img"},
		{"missing overlay", func(s *spec.Spec) { s.Overlays = append(s.Overlays, "/nonexistent/overlay") }, nil, "/nonexistent/overlay"},
		{"unknown group", func(s *spec.Spec) { s.Users[0].Groups = []string{"wheel"} }, nil, "users[0].groups[0]"},
		{"system too small", func(s *spec.Spec) {
			big := filepath.Join(filepath.Dir(s.Overlays[0]), "big")
			must(t, os.MkdirAll(filepath.Join(big, "opt"), 0o755))
			must(t, os.WriteFile(filepath.Join(big, "opt/blob"), bytes.Repeat([]byte("0123456789abcdef"), 1<<20), 0o644))
			s.Overlays = append(s.Overlays, big)
			s.Layout.SystemSize = 8 << 20
		}, nil, "partition 5 (system-a, layout.systemSize)"},
		{"no agent", nil, []Option{WithAgent("/nonexistent/agent")}, "agent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			_, agent := setup(t)
			s := testSpec(t, dir, base, "")
			if c.mod != nil {
				c.mod(s)
			}
			opts := append([]Option{WithAgent(agent), WithCacheDir(filepath.Join(dir, "cache")), WithEpoch(time.Unix(testEpoch, 0))}, c.opts...)
			_, err := Build(context.Background(), s, opts...)
			if err == nil {
				t.Fatal("build succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %q", err, c.want)
			}
			entries, _ := os.ReadDir(filepath.Join(dir, "out"))
			for _, e := range entries {
				t.Errorf("left behind in the output directory: %s", e.Name())
			}
		})
	}
}
