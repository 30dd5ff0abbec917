package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/edgeimg/edgeimg/builder"
	"github.com/edgeimg/edgeimg/builder/inspect"
	"github.com/edgeimg/edgeimg/builder/spec"
	"github.com/edgeimg/edgeimg/internal/basegen"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

// fixtures are shared by the tests: a generated base image and a stand-in agent binary.
var fixtures struct {
	once  sync.Once
	dir   string
	base  string
	agent string
	err   error
}

func setup(t *testing.T) (base, agent string) {
	t.Helper()
	for _, tool := range []string{"mke2fs", "mkfs.vfat", "sfdisk", "mcopy"} {
		testutil.NeedTool(t, tool)
	}
	fixtures.once.Do(func() {
		fixtures.dir, fixtures.err = os.MkdirTemp("", "edgeimg-cli-test-")
		if fixtures.err != nil {
			return
		}
		fixtures.base = filepath.Join(fixtures.dir, "base.img")
		fixtures.err = basegen.Generate(context.Background(), fixtures.base, basegen.Options{Small: true, Seed: 3})
		if fixtures.err != nil {
			return
		}
		fixtures.agent = filepath.Join(fixtures.dir, "edgeimg-agent")
		fixtures.err = os.WriteFile(fixtures.agent, []byte("#!/bin/sh\n# edgeimg-agent test stand-in\n"), 0o755)
	})
	if fixtures.err != nil {
		t.Fatal(fixtures.err)
	}
	return fixtures.base, fixtures.agent
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtures.dir != "" {
		os.RemoveAll(fixtures.dir)
	}
	os.Exit(code)
}

// execute runs edgeimg in-process with args and returns what it wrote.
func execute(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := New("test")
	var out, errb bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	err = root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

// cleanEnv unsets the variables that change what build does.
func cleanEnv(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	t.Setenv("EDGEIMG_AGENT", "")
	t.Setenv("XDG_CACHE_HOME", filepath.Join(t.TempDir(), "xdg-cache"))
}

const smallLayout = `layout:
  bootSize: 64MiB
  systemSize: 256MiB
  dataMinSize: 64MiB
`

// writeProject writes dir/project/edgeimg.yaml with the base image, an overlay and a
// relative output directory, all named relative to the spec's directory. board is the
// spec's board: line ("" for none).
func writeProject(t *testing.T, dir, board string) string {
	t.Helper()
	base, _ := setup(t)
	proj := filepath.Join(dir, "project")
	must(t, os.MkdirAll(filepath.Join(proj, "overlay/etc/app"), 0o755))
	must(t, os.WriteFile(filepath.Join(proj, "overlay/etc/app/app.conf"), []byte("listen=:8080\n"), 0o644))
	must(t, os.Symlink(base, filepath.Join(proj, "base.img")))
	text := "name: gw\n" + board + `base:
  image: base.img
overlays: [overlay]
users:
  - name: ops
    groups: [sudo]
    sshAuthorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHMvdcj6hbtW3ZPwLTYgo2aNQS22DapHzrFhHBmU2PAY ops@test"]
` + smallLayout + `output:
  dir: spec-out
  compress: zstd
`
	p := filepath.Join(proj, "edgeimg.yaml")
	must(t, os.WriteFile(p, []byte(text), 0o644))
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var progressLine = regexp.MustCompile(`^[a-z][a-z0-9 ./_-]*: done in [0-9]+\.[0-9]s$`)

// TestBuild runs `edgeimg build` twice from another directory: with -o relative to the
// current directory and plain output, then with the spec's output.dir (relative to the
// spec), --board, SOURCE_DATE_EPOCH and --json. Then it inspects the image.
func TestBuild(t *testing.T) {
	_, agent := setup(t)
	cleanEnv(t)
	dir := t.TempDir()
	cfg := writeProject(t, dir, "")
	work := filepath.Join(dir, "work")
	must(t, os.Mkdir(work, 0o755))
	t.Chdir(work)

	// 1. Plain output, -o relative to the current directory, --cache-dir relative too.
	stdout, stderr, err := execute(t, "build", "-c", "../project/edgeimg.yaml", "--board", "rpi4", "-o", "dist", "--agent", agent, "--cache-dir", "cache")
	if err != nil {
		t.Fatalf("build: %v\nstderr:\n%s", err, stderr)
	}
	wantOut := []string{"gw-rpi4.img", "gw-rpi4.img.zst", "SHA256SUMS", "gw-rpi4.report.json", "gw-rpi4.spdx.json"}
	for _, f := range wantOut {
		if _, err := os.Stat(filepath.Join(work, "dist", f)); err != nil {
			t.Errorf("-o dist: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "project", "spec-out")); err == nil {
		t.Error("-o did not override output.dir: project/spec-out exists")
	}
	if _, err := os.Stat(filepath.Join(work, "cache")); err != nil {
		t.Errorf("--cache-dir cache: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 3 || lines[0] != "built "+filepath.Join("dist", "gw-rpi4.img") ||
		strings.TrimSpace(lines[1]) != filepath.Join("dist", "gw-rpi4.img.zst") ||
		!regexp.MustCompile(`^in [0-9]+\.[0-9]s on [0-9]+ cores$`).MatchString(lines[2]) {
		t.Errorf("stdout:\n%s", stdout)
	}
	// Progress on a non-terminal: a plain line per step, no escape codes or carriage returns.
	if strings.ContainsAny(stderr, "\x1b\r") {
		t.Errorf("stderr holds terminal control characters: %q", stderr)
	}
	steps := 0
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		if strings.HasPrefix(l, "warning: ") {
			continue
		}
		if !progressLine.MatchString(l) {
			t.Errorf("stderr line %q is not a progress line", l)
		}
		steps++
	}
	if steps < 2 {
		t.Errorf("stderr has %d progress lines, want one per step:\n%s", steps, stderr)
	}

	// 2. --json, output.dir from the spec (relative to the spec's directory), the board from
	// --board (the spec has none), SOURCE_DATE_EPOCH.
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	stdout, stderr, err = execute(t, "build", "-c", cfg, "--board", "rpi4", "--json", "--agent", agent, "--cache-dir", "cache")
	if err != nil {
		t.Fatalf("build --json: %v\nstderr:\n%s", err, stderr)
	}
	var rep builder.Report
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("stdout is not a report: %v\n%s", err, stdout)
	}
	if dec.More() {
		t.Errorf("stdout holds more than the report:\n%s", stdout)
	}
	if rep.Name != "gw" || rep.Board != "rpi4" || rep.Builder != "test" || rep.Epoch != 1700000000 || rep.Table != "mbr" || len(rep.Partitions) == 0 {
		t.Errorf("report: name %q board %q builder %q epoch %d table %q, %d partitions", rep.Name, rep.Board, rep.Builder, rep.Epoch, rep.Table, len(rep.Partitions))
	}
	outDir := filepath.Join(dir, "project", "spec-out")
	for _, f := range wantOut {
		if _, err := os.Stat(filepath.Join(outDir, f)); err != nil {
			t.Errorf("output.dir relative to the spec: %v", err)
		}
	}
	var files []string
	for _, o := range rep.Outputs {
		files = append(files, o.File)
	}
	if !strings.Contains(strings.Join(files, " "), "gw-rpi4.img.zst") {
		t.Errorf("report outputs %v", files)
	}
	overlayFound := false
	for _, in := range rep.Inputs {
		if in.Kind == "overlay" {
			overlayFound = in.Name == filepath.Join(dir, "project", "overlay")
		}
		if in.Kind == "base" && in.Name != filepath.Join(dir, "project", "base.img") {
			t.Errorf("base input %q, want base.img in the spec's directory", in.Name)
		}
	}
	if !overlayFound {
		t.Errorf("report inputs %+v: want the overlay in the spec's directory", rep.Inputs)
	}
	if _, err := os.Stat(filepath.Join(work, "project")); err == nil {
		t.Error("a spec path was resolved against the current directory")
	}

	// 3. inspect, text and JSON.
	img := filepath.Join(outDir, "gw-rpi4.img")
	stdout, _, err = execute(t, "inspect", img)
	must(t, err)
	for _, want := range []string{
		"mbr partition table, disk signature " + rep.DiskSignature,
		"EDGECONFIG", "BOOT-A", "BOOT-B", "extended",
		"--- partition 1: autoboot.txt", "tryboot_a_b=1",
		"--- partition 2: config.txt", "dtparam=watchdog=on",
		"--- partition 2: cmdline.txt", "panic=10",
		"release: gw for rpi4, version 0, layout ", "at epoch 1700000000",
		"builder additions:",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect text lacks %q:\n%s", want, stdout)
		}
	}
	stdout, _, err = execute(t, "inspect", "--json", img)
	must(t, err)
	var got inspect.Image
	dec = json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	must(t, dec.Decode(&got))
	if got.Table != "mbr" || got.DiskSignature != rep.DiskSignature || len(got.Partitions) != 7 || got.Release == nil ||
		got.Release.BuildEpoch != 1700000000 || len(got.Release.Additions) == 0 {
		t.Errorf("inspect --json: %+v", got)
	}
	if len(got.Partitions) == 7 && (got.Partitions[1].Label != "BOOT-A" || !strings.Contains(got.Partitions[1].Config["cmdline.txt"], "root=PARTUUID="+got.Partitions[4].PartUUID)) {
		t.Errorf("inspect --json partition 2: %+v", got.Partitions[1])
	}
}

// TestBuildErrors checks that bad input gives one clear error and leaves no output.
func TestBuildErrors(t *testing.T) {
	_, agent := setup(t)
	dir := t.TempDir()
	cfg := writeProject(t, dir, "board: rpi4\n")
	good, err := os.ReadFile(cfg)
	must(t, err)
	variant := func(name, text string) string {
		p := filepath.Join(dir, "project", name)
		must(t, os.WriteFile(p, []byte(text), 0o644))
		return p
	}
	unknownField := variant("unknown-field.yaml", strings.Replace(string(good), "overlays:", "colour: red\noverlays:", 1))
	line := 1 + strings.Count(strings.Split(string(good), "overlays:")[0], "\n")
	unknownBoard := variant("unknown-board.yaml", strings.Replace(string(good), "board: rpi4", "board: rpi9", 1))
	invalid := variant("invalid.yaml", strings.Replace(string(good), "name: gw", "name: \"Not A Name!\"", 1))
	missing := filepath.Join(dir, "project", "missing.yaml")

	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		usage bool
		want  []string
	}{
		{"missing config", nil, []string{"-c", missing}, false, []string{missing, "no such file"}},
		{"unknown field", nil, []string{"-c", unknownField}, false, []string{fmt.Sprintf("%s:%d:", unknownField, line), "colour"}},
		{"unknown board in spec", nil, []string{"-c", unknownBoard}, false, []string{unknownBoard, "board", `"rpi9"`, "rpi4"}},
		{"unknown board flag", nil, []string{"-c", cfg, "--board", "pi5"}, true, []string{"--board", `"pi5"`, "rpi4"}},
		{"invalid spec", nil, []string{"-c", invalid}, false, []string{invalid, "name"}},
		{"bad SOURCE_DATE_EPOCH", map[string]string{"SOURCE_DATE_EPOCH": "1.5"}, []string{"-c", cfg}, true, []string{"SOURCE_DATE_EPOCH", `"1.5"`}},
		{"missing --agent", nil, []string{"-c", cfg, "--agent", filepath.Join(dir, "nope")}, true, []string{"--agent", filepath.Join(dir, "nope")}},
		{"missing $EDGEIMG_AGENT", map[string]string{"EDGEIMG_AGENT": filepath.Join(dir, "nope")}, []string{"-c", cfg}, true, []string{"$EDGEIMG_AGENT", filepath.Join(dir, "nope")}},
		{"no agent", nil, []string{"-c", cfg}, true, []string{"--agent", "EDGEIMG_AGENT", "edgeimg-agent-linux-arm64", "make agent"}},
		{"empty --config", nil, []string{"-c", ""}, true, []string{"--config"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := append([]string{"build", "--cache-dir", filepath.Join(dir, "cache")}, tc.args...)
			if !strings.Contains(strings.ToLower(tc.name), "agent") {
				args = append(args, "--agent", agent)
			}
			stdout, _, err := execute(t, args...)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			var ue UsageError
			if errors.As(err, &ue) != tc.usage {
				t.Errorf("error %q: usage error %v, want %v", err, !tc.usage, tc.usage)
			}
			if stdout != "" {
				t.Errorf("stdout on error: %q", stdout)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "project", "spec-out")); err == nil {
		t.Error("a failed build left an output directory")
	}
}

func TestMissingDefaultConfig(t *testing.T) {
	cleanEnv(t)
	t.Chdir(t.TempDir())
	_, _, err := execute(t, "build")
	if err == nil || !strings.Contains(err.Error(), "edgeimg.yaml") || !strings.Contains(err.Error(), "-c FILE") {
		t.Errorf("build without edgeimg.yaml: %v", err)
	}
}

func TestFindAgent(t *testing.T) {
	dir := t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte("agent"), 0o755))
		return p
	}
	flag, env, beside := file("flag-agent"), file("env-agent"), file("edgeimg-agent-linux-arm64")
	for _, tc := range []struct {
		name            string
		flag, env, exe  string
		want, wantError string
	}{
		{"flag wins", flag, env, dir, flag, ""},
		{"then the variable", "", env, dir, env, ""},
		{"then beside the executable", "", "", dir, beside, ""},
		{"not beside", "", "", t.TempDir(), "", "edgeimg-agent-linux-arm64 in "},
		{"unknown executable", "", "", "", "", "beside the edgeimg executable"},
		{"flag missing", filepath.Join(dir, "x"), env, dir, "", "--agent: edgeimg-agent stat " + filepath.Join(dir, "x")},
		{"variable a directory", "", dir, dir, "", "$EDGEIMG_AGENT: edgeimg-agent " + dir + " is not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := findAgent(tc.flag, tc.env, tc.exe, "arm64")
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("findAgent = %q, %v; want an error containing %q", got, err, tc.wantError)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("findAgent = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestSchema(t *testing.T) {
	stdout, _, err := execute(t, "schema")
	must(t, err)
	want, err := spec.Schema()
	must(t, err)
	if stdout != string(want)+"\n" {
		t.Error("edgeimg schema differs from spec.Schema()")
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	if _, ok := v["properties"]; !ok {
		if _, ok := v["$defs"]; !ok {
			t.Errorf("schema has neither properties nor $defs: %v", v)
		}
	}
}

func TestVersion(t *testing.T) {
	stdout, _, err := execute(t, "version", "--json")
	must(t, err)
	var v map[string]string
	must(t, json.Unmarshal([]byte(stdout), &v))
	if v["version"] != "test" || !strings.HasPrefix(v["go"], "go") || !strings.Contains(v["platform"], "/") {
		t.Errorf("version --json: %v", v)
	}
	stdout, _, err = execute(t, "version")
	must(t, err)
	if !strings.HasPrefix(stdout, "edgeimg test (go") {
		t.Errorf("version: %q", stdout)
	}
}

func TestCompletion(t *testing.T) {
	bash := testutil.NeedTool(t, "bash")
	stdout, _, err := execute(t, "completion", "bash")
	must(t, err)
	p := filepath.Join(t.TempDir(), "edgeimg.bash")
	must(t, os.WriteFile(p, []byte(stdout), 0o644))
	if out, err := exec.Command(bash, "-n", p).CombinedOutput(); err != nil {
		t.Errorf("bash -n: %v\n%s", err, out)
	}
	if !strings.Contains(stdout, "__start_edgeimg") {
		t.Error("bash completion does not define __start_edgeimg")
	}
	// What the completion script asks for: subcommands, then --board values.
	stdout, _, err = execute(t, "__complete", "")
	must(t, err)
	for _, c := range []string{"build", "inspect", "schema", "version", "completion"} {
		if !strings.Contains(stdout, c) {
			t.Errorf("completing a command lacks %s:\n%s", c, stdout)
		}
	}
	stdout, _, err = execute(t, "__complete", "build", "--board", "")
	must(t, err)
	if !strings.HasPrefix(stdout, "rpi4\n") {
		t.Errorf("completing --board:\n%s", stdout)
	}
}

func TestHelp(t *testing.T) {
	stdout, _, err := execute(t, "build", "--help")
	must(t, err)
	for _, want := range []string{"edgeimg build --board rpi4 -c site.yaml -o dist/", "--agent", "SOURCE_DATE_EPOCH"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("build --help lacks %q", want)
		}
	}
	stdout, _, err = execute(t)
	must(t, err)
	if !strings.Contains(stdout, "Available Commands") {
		t.Errorf("edgeimg without arguments does not print help:\n%s", stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"frob"}, {"build", "extra"}, {"build", "--nope"}, {"inspect"}, {"inspect", "a", "b"}, {"version", "--json=maybe"}} {
		_, _, err := execute(t, args...)
		var ue UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: %v is not a UsageError", args, err)
		}
	}
}

func TestInspectErrors(t *testing.T) {
	dir := t.TempDir()
	_, _, err := execute(t, "inspect", filepath.Join(dir, "none.img"))
	if err == nil || !strings.Contains(err.Error(), "none.img") {
		t.Errorf("inspect of a missing file: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.img")
	must(t, os.WriteFile(garbage, bytes.Repeat([]byte("edgeimg!"), 4096), 0o644))
	_, _, err = execute(t, "inspect", garbage)
	if err == nil || !strings.Contains(err.Error(), "garbage.img") {
		t.Errorf("inspect of garbage: %v", err)
	}
}

func TestProgressPlain(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	must(t, err)
	defer f.Close()
	if isTerminal(f) {
		t.Fatal("a regular file is a terminal")
	}
	var b bytes.Buffer
	p := newProgress(&b)
	p.Start("writing disk", 100)
	p.Add(60)
	p.Add(40)
	p.Done()
	p.Start("compressing", 0)
	p.Done()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 2 || !progressLine.MatchString(lines[0]) || !strings.HasPrefix(lines[0], "writing disk: ") || !strings.HasPrefix(lines[1], "compressing: ") {
		t.Errorf("progress:\n%q", b.String())
	}
}
