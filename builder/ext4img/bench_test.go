package ext4img

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

func benchEnv(b *testing.B, name string, def int) int {
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

// synthTree materialises nFiles files totalling about totalBytes in dir (1% of them 1-4 MiB,
// the rest small, spread over 1,500 directories, content from a seeded generator) and returns
// the tree naming them.
func synthTree(b *testing.B, dir string, nFiles int, totalBytes int64) (*tree.Tree, int64) {
	b.Helper()
	rng := rand.New(rand.NewPCG(20240501, 1))
	content := rand.NewChaCha8([32]byte{'e', 'd', 'g', 'e', 'i', 'm', 'g'})
	const nDirs = 1500
	tr := tree.New()
	dirs := make([]string, nDirs)
	for i := range dirs {
		dirs[i] = fmt.Sprintf("d%02d/s%03d", i%40, i)
		if err := tr.MkdirAll(dirs[i], epoch); err != nil {
			b.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, dirs[i]), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	nBig := nFiles / 100
	sizes := make([]int64, nFiles)
	var bigTotal int64
	for i := 0; i < nBig; i++ {
		sizes[i] = 1<<20 + rng.Int64N(3<<20)
		bigTotal += sizes[i]
	}
	mean := max((totalBytes-bigTotal)/int64(max(nFiles-nBig, 1)), 1)
	for i := nBig; i < nFiles; i++ {
		sizes[i] = rng.Int64N(2 * mean)
	}
	rng.Shuffle(nFiles, func(i, j int) { sizes[i], sizes[j] = sizes[j], sizes[i] })
	buf := make([]byte, 4<<20)
	var total int64
	for i, size := range sizes {
		p := fmt.Sprintf("%s/f%05d", dirs[rng.IntN(nDirs)], i)
		host := filepath.Join(dir, p)
		content.Read(buf[:size])
		if err := os.WriteFile(host, buf[:size], 0o644); err != nil {
			b.Fatal(err)
		}
		if err := tr.Put(&tree.Entry{Path: p, Kind: tree.Regular, Mode: 0o644, ModTime: epoch, Size: size, Content: tree.File(host)}); err != nil {
			b.Fatal(err)
		}
		total += size
	}
	return tr, total
}

// peakRSS returns VmHWM of this process in bytes; resetPeakRSS starts a new measurement.
func peakRSS() int64 {
	return testutil.SelfPeak()
}

// selfCPU is the user+system CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// BenchmarkWrite compares Write with mke2fs -d on the same synthetic tree (EDGEIMG_BENCH_FILES
// files, EDGEIMG_BENCH_MB MiB in all). Both include an fsync of the image (mke2fs does one).
func BenchmarkWrite(b *testing.B) {
	mke2fs := testutil.NeedTool(b, "mke2fs")
	nFiles := benchEnv(b, "EDGEIMG_BENCH_FILES", 20000)
	mb := benchEnv(b, "EDGEIMG_BENCH_MB", 800)
	work := b.TempDir()
	src := filepath.Join(work, "src")
	tr, total := synthTree(b, src, nFiles, int64(mb)<<20)
	imgSize := total + total/4 + 256<<20
	imgSize &^= BlockSize - 1

	var ours, oursWrite, theirs, oursCPU, theirsCPU time.Duration
	var oursPeak, theirsPeak int64
	var fsSize int64
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ourImg := filepath.Join(work, "ours.img")
		f, err := os.Create(ourImg)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Truncate(imgSize); err != nil {
			b.Fatal(err)
		}
		resetPeakRSS()
		cpu0 := selfCPU()
		start := time.Now()
		info, err := Write(context.Background(), tr, f, 0, imgSize, Options{Partition: "bench", Epoch: epoch})
		if err != nil {
			b.Fatal(err)
		}
		oursWrite += time.Since(start)
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
		oursCPU += selfCPU() - cpu0
		oursPeak = max(oursPeak, peakRSS())
		fsSize = info.Size
		f.Close()
		os.Remove(ourImg)

		theirImg := filepath.Join(work, "mke2fs.img")
		os.Remove(theirImg)
		cmd := exec.Command(mke2fs, "-q", "-t", "ext4", "-d", src, "-E", "root_owner=0:0", theirImg, strconv.FormatInt(imgSize>>10, 10)+"k")
		start = time.Now()
		peak, err := testutil.RunPeak(cmd)
		if err != nil {
			b.Fatalf("mke2fs: %v", err)
		}
		theirs += time.Since(start)
		theirsCPU += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		theirsPeak = max(theirsPeak, peak)
		os.Remove(theirImg)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(ours.Seconds()/n, "ours-s")
	b.ReportMetric(oursWrite.Seconds()/n, "ours-nosync-s")
	b.ReportMetric(theirs.Seconds()/n, "mke2fs-s")
	b.ReportMetric(oursCPU.Seconds()/n, "ours-cpu-s")
	b.ReportMetric(theirsCPU.Seconds()/n, "mke2fs-cpu-s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "x-vs-mke2fs")
	b.ReportMetric(float64(oursPeak)/(1<<20), "ours-peak-MiB")
	b.ReportMetric(float64(theirsPeak)/(1<<20), "mke2fs-peak-MiB")
	b.ReportMetric(float64(fsSize)/(1<<20), "fs-MiB")
	b.ReportMetric(float64(nFiles), "files")
}
