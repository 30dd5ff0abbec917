package builder

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/spec"
	"github.com/edgeimg/edgeimg/internal/basegen"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

// The benchmark's disk layout. The system slot must hold the base's root filesystem (the
// ~800 MB payload plus the base's own files, about 0.9 GB) with room to spare: 1.5 GiB is the
// smallest 4 MiB multiple that leaves a third free, as a real slot would (updates grow). The
// boot partitions keep the board default; the data partition is the minimum the test layout
// uses, since it is only created (first boot grows it). The whole image is then 3.6 GiB,
// sparse. The mke2fs baseline makes a filesystem of the same size as one system slot.
const (
	benchBootSize   = 256 << 20
	benchSystemSize = 1536 << 20
	benchDataSize   = 64 << 20
)

// benchResult is what TestHelperBuild reports back to the benchmark.
type benchResult struct {
	Seconds float64  `json:"seconds"` // the Build call, as timed inside the helper
	CPU     float64  `json:"-"`       // user+system seconds of the helper process
	PeakRSS int64    `json:"peakRSS"` // VmHWM of the helper process, bytes
	Timings []Timing `json:"timings"` // the report's stages
	Error   string   `json:"error,omitempty"`
}

// benchFixture is the generated input of the benchmark.
type benchFixture struct {
	dir  string // where base.img, agent, spec and tree live
	spec string
	tree string // the base's root filesystem extracted with owners, modes and xattrs
}

func benchEnvInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// benchSetup generates the base image (basegen: EDGEIMG_BENCH_FILES extra files holding
// EDGEIMG_BENCH_MB MiB), a stand-in agent and a spec. With EDGEIMG_BENCH_DIR set they are
// kept there and reused by later runs with the same sizes; otherwise they live in a temporary
// directory removed at the end.
func benchSetup(b *testing.B) *benchFixture {
	testutil.NeedTool(b, "mke2fs")
	testutil.NeedTool(b, "mkfs.vfat")
	testutil.NeedTool(b, "sfdisk")
	testutil.NeedTool(b, "mcopy")
	testutil.NeedTool(b, "tar")
	files := benchEnvInt(b, "EDGEIMG_BENCH_FILES", 20000)
	mb := benchEnvInt(b, "EDGEIMG_BENCH_MB", 800)
	root := os.Getenv("EDGEIMG_BENCH_DIR")
	if root == "" {
		root = b.TempDir()
	}
	f := &benchFixture{dir: filepath.Join(root, fmt.Sprintf("base-%d-%dMiB", files, mb))}
	must(b, os.MkdirAll(f.dir, 0o755))
	img := filepath.Join(f.dir, "base.img")
	if _, err := os.Stat(img); err != nil {
		start := time.Now()
		must(b, basegen.Generate(context.Background(), img, basegen.Options{
			Seed: 1, ExtraFiles: files, ExtraBytes: int64(mb) << 20}))
		b.Logf("generated %s in %.1fs", img, time.Since(start).Seconds())
	}
	must(b, os.WriteFile(filepath.Join(f.dir, "edgeimg-agent"), []byte("#!/bin/sh\n# edgeimg-agent bench stand-in\n"), 0o755))
	overlay := filepath.Join(f.dir, "overlay")
	must(b, os.MkdirAll(filepath.Join(overlay, "etc/app"), 0o755))
	must(b, os.WriteFile(filepath.Join(overlay, "etc/app/app.conf"), []byte("listen=:8080\n"), 0o644))
	f.spec = filepath.Join(f.dir, "edgeimg.yaml")
	must(b, os.WriteFile(f.spec, []byte(fmt.Sprintf(`name: bench
board: rpi4
base:
  image: %s
overlays: [overlay]
users:
  - name: ops
    groups: [sudo]
    sshAuthorizedKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHMvdcj6hbtW3ZPwLTYgo2aNQS22DapHzrFhHBmU2PAY ops@bench"]
layout:
  bootSize: %d
  systemSize: %d
  dataMinSize: %d
output:
  compress: none
`, img, benchBootSize, benchSystemSize, benchDataSize)), 0o644))
	f.tree = filepath.Join(f.dir, "tree")
	return f
}

// benchTree extracts the root filesystem tree from the builder's rootfs cache (a PAX tar
// with xattrs) once, outside any timed region. As root, owners, modes and file capabilities
// are restored exactly; otherwise the owners are the caller's (mke2fs copies what it finds,
// which does not change its speed).
func benchTree(b *testing.B, f *benchFixture, cacheDir string) string {
	done := filepath.Join(f.dir, "tree.done")
	if _, err := os.Stat(done); err == nil {
		return f.tree
	}
	tars, _ := filepath.Glob(filepath.Join(cacheDir, "rootfs", "*.tar"))
	if len(tars) != 1 {
		b.Fatalf("rootfs cache %s holds %d tars, want 1", cacheDir, len(tars))
	}
	os.RemoveAll(f.tree)
	if err := os.MkdirAll(f.tree, 0o755); err != nil {
		b.Fatal(err)
	}
	args := []string{"-x", "-p", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-f", tars[0], "-C", f.tree}
	if os.Geteuid() != 0 {
		b.Logf("not root: the tree for mke2fs is extracted without its owners")
	}
	testutil.Run(b, "tar", args...)
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return f.tree
}

// runBuild runs one Build in a fresh process of this test binary (TestHelperBuild), so that
// its peak memory is its own and no state carries over from an earlier build.
func runBuild(b *testing.B, f *benchFixture, cacheDir, outDir, profile string) benchResult {
	resFile := filepath.Join(b.TempDir(), "result.json")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBuild$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"EDGEIMG_BENCH_HELPER=1",
		"EDGEIMG_BENCH_SPEC="+f.spec,
		"EDGEIMG_BENCH_AGENT="+filepath.Join(f.dir, "edgeimg-agent"),
		"EDGEIMG_BENCH_CACHE="+cacheDir,
		"EDGEIMG_BENCH_OUT="+outDir,
		"EDGEIMG_BENCH_RESULT="+resFile,
		"EDGEIMG_BENCH_PROFILE="+profile,
	)
	out, err := cmd.CombinedOutput()
	var r benchResult
	if data, rerr := os.ReadFile(resFile); rerr == nil {
		if jerr := json.Unmarshal(data, &r); jerr != nil {
			b.Fatalf("helper result: %v", jerr)
		}
	}
	if err != nil || r.Error != "" || r.Seconds == 0 {
		b.Fatalf("build helper: %v %s\n%s", err, r.Error, out)
	}
	r.CPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	return r
}

// TestHelperBuild is not a test: BenchmarkBuild runs it in a subprocess to do one build.
func TestHelperBuild(t *testing.T) {
	if os.Getenv("EDGEIMG_BENCH_HELPER") != "1" {
		t.Skip("helper process for BenchmarkBuild")
	}
	res := benchResult{}
	defer func() {
		data, _ := json.Marshal(res)
		if err := os.WriteFile(os.Getenv("EDGEIMG_BENCH_RESULT"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}()
	s, err := spec.Load(os.Getenv("EDGEIMG_BENCH_SPEC"))
	if err == nil {
		s.SetDefaults(spec.Defaults{BootSize: 256 << 20, SystemSize: 2 << 30, DataMinSize: 1 << 30,
			Compress: "none", OutputDir: os.Getenv("EDGEIMG_BENCH_OUT"), Version: "0"})
		err = s.Validate()
	}
	if err != nil {
		res.Error = err.Error()
		return
	}
	if p := os.Getenv("EDGEIMG_BENCH_PROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			res.Error = err.Error()
			return
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	r, err := Build(context.Background(), s, WithAgent(os.Getenv("EDGEIMG_BENCH_AGENT")),
		WithCacheDir(os.Getenv("EDGEIMG_BENCH_CACHE")), WithOutputDir(os.Getenv("EDGEIMG_BENCH_OUT")))
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		res.Error = err.Error()
		return
	}
	res.Timings = r.Report.Timings
	res.PeakRSS = testutil.SelfPeak()
}

func stages(ts []Timing) string {
	var parts []string
	for _, t := range ts {
		if t.Stage != "total" {
			parts = append(parts, fmt.Sprintf("%s %.2f", t.Stage, t.Seconds))
		}
	}
	return strings.Join(parts, ", ")
}

// BenchmarkBuild measures the whole build of a base holding EDGEIMG_BENCH_FILES (20,000)
// extra files of EDGEIMG_BENCH_MB (800) MiB against `mke2fs -t ext4 -d` of the same root
// tree, in the same run. ns/op is the warm build (the base's root filesystem already in the
// rootfs cache, output.compress none); cold is the same build with an empty cache directory.
// Each build runs in its own process so its peak memory is its own. Set
// EDGEIMG_BENCH_PROFILE=DIR to write warm.prof and cold.prof CPU profiles there.
func BenchmarkBuild(b *testing.B) {
	mke2fs := testutil.NeedTool(b, "mke2fs")
	f := benchSetup(b)
	profDir := os.Getenv("EDGEIMG_BENCH_PROFILE")
	prof := func(name string) string {
		if profDir == "" {
			return ""
		}
		return filepath.Join(profDir, name+".prof")
	}
	var warm, cold, base time.Duration
	var warmCPU, coldCPU, baseCPU float64
	var warmPeak, coldPeak, basePeak int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		work := b.TempDir()
		cache := filepath.Join(work, "cache")

		// Cold: an empty cache directory, so the build reads the base's ext4 and fills the cache.
		// Before each measurement, the writeback of the previous one is finished (sync).
		syscall.Sync()
		start := time.Now()
		c := runBuild(b, f, cache, filepath.Join(work, "out-cold"), prof("cold"))
		cold += time.Since(start)
		coldPeak = max(coldPeak, c.PeakRSS)
		coldCPU += c.CPU
		os.RemoveAll(filepath.Join(work, "out-cold"))
		tree := benchTree(b, f, cache)

		// Warm: the cache the cold build filled.
		syscall.Sync()
		b.StartTimer()
		start = time.Now()
		w := runBuild(b, f, cache, filepath.Join(work, "out-warm"), prof("warm"))
		warm += time.Since(start)
		b.StopTimer()
		warmPeak = max(warmPeak, w.PeakRSS)
		warmCPU += w.CPU
		os.RemoveAll(filepath.Join(work, "out-warm"))

		// Baseline: the shell way of making one system partition of the same tree.
		img := filepath.Join(work, "mke2fs.img")
		cmd := exec.Command(mke2fs, "-q", "-t", "ext4", "-d", tree, img, strconv.FormatInt(benchSystemSize>>10, 10)+"k")
		syscall.Sync()
		start = time.Now()
		peak, err := testutil.RunPeak(cmd)
		if err != nil {
			b.Fatalf("mke2fs: %v", err)
		}
		d := time.Since(start)
		base += d
		basePeak = max(basePeak, peak)
		dCPU := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
		baseCPU += dCPU
		os.Remove(img)

		b.Logf("run %d: mke2fs -d %.2fs (cpu %.2fs, peak %d MiB) | warm %.2fs = %.2fx (cpu %.2fs, peak %d MiB; %s) | cold %.2fs = %.2fx (cpu %.2fs, peak %d MiB; %s)",
			i+1, d.Seconds(), dCPU, peak>>20,
			w.Seconds, w.Seconds/d.Seconds(), w.CPU, w.PeakRSS>>20, stages(w.Timings),
			c.Seconds, c.Seconds/d.Seconds(), c.CPU, c.PeakRSS>>20, stages(c.Timings))
		b.StartTimer()
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(warm.Seconds()/n, "warm-s")
	b.ReportMetric(cold.Seconds()/n, "cold-s")
	b.ReportMetric(base.Seconds()/n, "mke2fs-s")
	b.ReportMetric(warm.Seconds()/base.Seconds(), "warm-x-mke2fs")
	b.ReportMetric(cold.Seconds()/base.Seconds(), "cold-x-mke2fs")
	b.ReportMetric(warmCPU/n, "warm-cpu-s")
	b.ReportMetric(coldCPU/n, "cold-cpu-s")
	b.ReportMetric(baseCPU/n, "mke2fs-cpu-s")
	b.ReportMetric(float64(warmPeak)/(1<<20), "warm-peak-MiB")
	b.ReportMetric(float64(coldPeak)/(1<<20), "cold-peak-MiB")
	b.ReportMetric(float64(basePeak)/(1<<20), "mke2fs-peak-MiB")
}
