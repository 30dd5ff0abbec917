package basegen

import (
	"fmt"
	"math/rand/v2"

	"github.com/edgeimg/edgeimg/builder/tree"
)

// filesPerDir is the average number of benchmark files per directory.
const filesPerDir = 13

var benchExts = []string{"so", "txt", "py", "json", "mo", "gz", "png", "conf", "html", "pyc"}

// bench adds o.ExtraFiles files holding o.ExtraBytes bytes in total under /usr/share/bench
// and /usr/lib/bench. About 70 % of the bytes sit in files of 1–4 MiB (one file in twenty at
// most); the rest is spread over the small files with exponentially distributed sizes.
func bench(b *builder, o Options) {
	if o.ExtraFiles == 0 || b.err != nil {
		return
	}
	rng := rand.New(rand.NewPCG(uint64(o.Seed), 0x6265_6e63_6866_696c)) // "benchfil"
	sizes := benchSizes(rng, o.ExtraFiles, o.ExtraBytes)
	dirs := (o.ExtraFiles + filesPerDir - 1) / filesPerDir
	for i, size := range sizes {
		d := i % dirs
		root := "usr/share/bench"
		if d%2 == 1 {
			root = "usr/lib/bench"
		}
		p := fmt.Sprintf("%s/g%02d/d%04d/f%05d.%s", root, d/2%32, d, i, benchExts[rng.IntN(len(benchExts))])
		b.put(&tree.Entry{Path: p, Kind: tree.Regular, Mode: 0o644, Size: size, Content: b.gen.content(p, size)})
	}
}

// benchSizes splits total into n file sizes, shuffled so big files land anywhere.
func benchSizes(rng *rand.Rand, n int, total int64) []int64 {
	sizes := make([]int64, n)
	if total == 0 {
		return sizes
	}
	nBig := 0
	if n >= 20 && total >= 16*mib {
		nBig = min(n/20, int(total*7/10/(5*mib/2)))
	}
	var used int64
	for i := 0; i < nBig; i++ {
		sizes[i] = mib + rng.Int64N(3*mib+1)
		used += sizes[i]
	}
	if used > total { // cannot happen with the bounds above; keep the sum exact anyway
		nBig, used = 0, 0
		clear(sizes)
	}
	small := sizes[nBig:]
	weights := make([]float64, len(small))
	var sum float64
	for i := range weights {
		weights[i] = rng.ExpFloat64()
		sum += weights[i]
	}
	rest := total - used
	var given int64
	for i := range small {
		small[i] = int64(float64(rest) * weights[i] / sum)
		given += small[i]
	}
	if len(small) > 0 {
		small[len(small)-1] += rest - given
	} else {
		sizes[n-1] += rest
	}
	rng.Shuffle(n, func(i, j int) { sizes[i], sizes[j] = sizes[j], sizes[i] })
	return sizes
}
