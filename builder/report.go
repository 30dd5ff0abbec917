package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/edgeimg/edgeimg/builder/output"
	"github.com/edgeimg/edgeimg/builder/spec"
	"github.com/edgeimg/edgeimg/hw"
)

// Report is the build report, NAME-BOARD.report.json.
type Report struct {
	Name          string          `json:"name"`
	Board         string          `json:"board"`
	Version       string          `json:"version"`
	Builder       string          `json:"builder"`
	Epoch         int64           `json:"sourceDateEpoch"`
	Inputs        []Input         `json:"inputs"`
	LayoutVersion int             `json:"layoutVersion"`
	Table         string          `json:"table"`
	DiskSignature string          `json:"diskSignature"`
	Size          int64           `json:"size"`
	Partitions    []PartitionInfo `json:"partitions"`
	Outputs       []Output        `json:"outputs"`
	Additions     []string        `json:"additions"`
	Warnings      []string        `json:"warnings,omitempty"`
	K3s           *K3sReport      `json:"k3s,omitempty"` // the K3s payload (k3s.go); nil without K3s
	Timings       []Timing        `json:"timings"`
}

// Input is something the build read, with its digest.
type Input struct {
	Kind   string `json:"kind"` // spec, base, base-raw, overlay, agent
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// Output is a file the build wrote.
type Output struct {
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Timing is how long a stage took.
type Timing struct {
	Stage   string  `json:"stage"`
	Seconds float64 `json:"seconds"`
}

func newReport(s *spec.Spec, board hw.Board, src *baseSource, agent *agentBinary, lay *layout, d *diskResult, additions []string, epoch time.Time, version string) *Report {
	r := &Report{
		Name: s.Name, Board: board.Name(), Version: s.Version, Builder: version, Epoch: epoch.Unix(),
		LayoutVersion: lay.Version, Table: "mbr", DiskSignature: fmt.Sprintf("0x%08x", lay.Table.DiskSignature),
		Size: d.Size, Partitions: d.Partitions,
	}
	if s.File != "" {
		if sum, err := output.SHA256File(s.File); err == nil {
			r.Inputs = append(r.Inputs, Input{Kind: "spec", Name: s.File, SHA256: sum})
		}
	}
	r.Inputs = append(r.Inputs, Input{Kind: "base", Name: src.Name, SHA256: src.SourceSHA256})
	if src.RawSHA256 != src.SourceSHA256 {
		r.Inputs = append(r.Inputs, Input{Kind: "base-raw", Name: src.RawPath, SHA256: src.RawSHA256})
	}
	for _, o := range s.Overlays {
		r.Inputs = append(r.Inputs, Input{Kind: "overlay", Name: o, SHA256: dirDigest(o)})
	}
	r.Inputs = append(r.Inputs, Input{Kind: "agent", Name: agent.Path, SHA256: agent.SHA256})
	seen := map[string]bool{}
	for _, a := range additions {
		if !seen[a] {
			seen[a] = true
			r.Additions = append(r.Additions, a)
		}
	}
	sort.Strings(r.Additions)
	for _, p := range d.Skipped {
		r.Warnings = append(r.Warnings, fmt.Sprintf("/%s: a socket in the base; ext4 made from a tar stream cannot hold sockets, so it was left out (sockets are made by the programs that listen on them)", p))
	}
	return r
}

// dirDigest hashes a directory tree: every path, kind, executable bit, symlink target and
// file content, in sorted order.
func dirDigest(dir string) string {
	h := sha256.New()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			fmt.Fprintf(h, "error %v\n", err)
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return nil
		}
		fmt.Fprintf(h, "%s %v %d\n", filepath.ToSlash(rel), info.Mode().Type(), info.Mode().Perm()&0o111)
		switch {
		case info.Mode().IsRegular():
			if f, err := os.Open(p); err == nil {
				io.Copy(h, f)
				f.Close()
			}
		case info.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			io.WriteString(h, l)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

type stopwatch struct {
	start, last time.Time
	laps        []Timing
}

func newStopwatch() *stopwatch {
	now := time.Now()
	return &stopwatch{start: now, last: now}
}

func (s *stopwatch) lap(stage string) {
	now := time.Now()
	s.laps = append(s.laps, Timing{Stage: stage, Seconds: round(now.Sub(s.last).Seconds())})
	s.last = now
}

func round(f float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', 3, 64), 64)
	return v
}

// publish checksums and compresses the image, writes SHA256SUMS and the report, and moves the
// outputs from the staging directory into outDir.
// extras are further small outputs (file name → content), checksummed with the image.
func publish(ctx context.Context, stage *staging, outDir, name, compress, diskSum string, extras map[string][]byte, rep *Report, clock *stopwatch, o *options) (*Result, error) {
	imgName := name + ".img"
	img := stage.path(imgName)
	st, err := os.Stat(img)
	if err != nil {
		return nil, err
	}
	sums := map[string]string{}
	sum := diskSum // hashed while the image was written
	if sum == "" {
		o.progress.Start("checksum "+imgName, st.Size())
		sum, err = hashFileProgress(ctx, img, o.progress)
		o.progress.Done()
		if err != nil {
			return nil, err
		}
	}
	sums[imgName] = sum
	clock.lap("checksum")
	rep.Outputs = append(rep.Outputs, Output{File: imgName, Size: st.Size(), SHA256: sum})
	files := []string{imgName}
	res := &Result{Image: filepath.Join(outDir, imgName), Report: rep}
	if compress != "" && compress != output.None {
		cname := imgName + output.Ext(compress)
		o.progress.Start("compress "+cname, st.Size())
		var last int64
		csum, err := output.Compress(ctx, img, stage.path(cname), compress, func(n int64) { o.progress.Add(n - last); last = n })
		o.progress.Done()
		if err != nil {
			return nil, fmt.Errorf("compressing: %w", err)
		}
		cst, err := os.Stat(stage.path(cname))
		if err != nil {
			return nil, err
		}
		sums[cname] = csum
		rep.Outputs = append(rep.Outputs, Output{File: cname, Size: cst.Size(), SHA256: csum})
		files = append(files, cname)
		res.Compressed = filepath.Join(outDir, cname)
		clock.lap("compress")
	}
	extraNames := make([]string, 0, len(extras))
	for n := range extras {
		extraNames = append(extraNames, n)
	}
	sort.Strings(extraNames)
	for _, n := range extraNames {
		b := extras[n]
		esum, err := output.AtomicWrite(stage.path(n), func(w io.Writer) error { _, err := w.Write(b); return err })
		if err != nil {
			return nil, err
		}
		sums[n] = esum
		rep.Outputs = append(rep.Outputs, Output{File: n, Size: int64(len(b)), SHA256: esum})
		files = append(files, n)
	}
	for _, a := range stage.added {
		sums[a.File] = a.SHA256
		rep.Outputs = append(rep.Outputs, a)
		files = append(files, a.File)
	}
	if _, err := output.AtomicWrite(stage.path("SHA256SUMS"), func(w io.Writer) error {
		_, err := w.Write(output.SHA256Sums(sums))
		return err
	}); err != nil {
		return nil, err
	}
	files = append(files, "SHA256SUMS")
	rep.Timings = append(clock.laps, Timing{Stage: "total", Seconds: round(time.Since(clock.start).Seconds())})
	repName := name + ".report.json"
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(stage.path(repName), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	files = append(files, repName)
	for _, f := range files {
		if err := os.Rename(stage.path(f), filepath.Join(outDir, f)); err != nil {
			return nil, fmt.Errorf("output: %w", err)
		}
	}
	return res, nil
}

func hashFileProgress(ctx context.Context, path string, p Progress) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		p.Add(int64(n))
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("hashing %s: %w", path, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
