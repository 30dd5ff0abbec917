package delta

import (
	"os"
	"testing"

	"github.com/edgeimg/edgeimg/internal/testutil"
)

// BenchmarkDelta measures the demand: for a release that changes one ~50 MB image
// inside a ~1 GB system, the device downloads at most 10% of the full bundle. Two ext4 system
// images (builder/ext4img) hold 15 incompressible image-like tars of 30-80 MB and 4,000 small
// files; release 2 replaces a 50 MB tar by another of 53 MB (so the data after it moves) and
// has its own file system UUID and epoch. The figures are per run: the delta download as a
// fraction of the full bundle, and the same for a fixed-block scheme (256 KiB blocks at
// multiples of 256 KiB) measured on the same images.
func BenchmarkDelta(b *testing.B) {
	files := systemFiles(15, 30<<20, 80<<20, 4000, 96<<10)
	changed := 7
	files[changed].size = 50 << 20
	newSize := int64(53<<20 + 12345)
	dir := b.TempDir()
	old, oldSize, nw, nwSize := releasePair(b, dir, files, changed, newSize)
	b.ResetTimer()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // peak RSS of the delta part only
	var f figures
	for range b.N {
		f = measure(b, old, oldSize, nw, nwSize)
	}
	b.StopTimer()
	b.ReportMetric(float64(testutil.SelfPeak())/(1<<20), "peak-MiB")
	mb := func(n int64) float64 { return float64(n) / 1e6 }
	b.ReportMetric(float64(f.downloaded)/float64(f.full), "download/full")
	b.ReportMetric(float64(f.fixed)/float64(f.full), "fixed-download/full")
	b.ReportMetric(mb(f.full), "full-MB")
	b.ReportMetric(mb(f.downloaded), "download-MB")
	b.ReportMetric(mb(f.fixed), "fixed-download-MB")
	b.ReportMetric(mb(newSize), "changed-file-MB")
	b.ReportMetric(float64(f.fetched), "chunks-fetched")
	b.ReportMetric(float64(f.chunks), "chunks")
	b.ReportMetric(f.streamBytes.Seconds(), "stream-s")
	if float64(f.downloaded) > 0.1*float64(f.full) {
		b.Errorf("the delta download is %.1f%% of the full bundle, the issue demands at most 10%%", 100*float64(f.downloaded)/float64(f.full))
	}
}
