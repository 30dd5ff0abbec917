package builder

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/edgeimg/edgeimg/agent/grow"
	"github.com/edgeimg/edgeimg/builder/base"
	"github.com/edgeimg/edgeimg/builder/disk"
	"github.com/edgeimg/edgeimg/builder/fetch"
	"github.com/edgeimg/edgeimg/builder/lock"
	"github.com/edgeimg/edgeimg/builder/output"
	"github.com/edgeimg/edgeimg/builder/rootfs"
	"github.com/edgeimg/edgeimg/builder/spec"
	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/hw"
)

// Result is what a build produced.
type Result struct {
	// Image is the path of the raw disk image.
	Image string
	// Compressed is the path of the compressed image ("" when output.compress is none).
	Compressed string
	// Update is the path of the signed OTA bundle NAME-BOARD.update ("" without ota.signingKey).
	Update string
	// Report is the build report, also written as NAME-BOARD.report.json.
	Report *Report
	// Lock pins what this build resolved (edgeimg.lock): the base's URL, and with K3s the k3s
	// executable and every image. The caller writes it beside the spec.
	Lock *lock.Lock
}

// Build runs the pipeline: it reads the base image named by s (or the board's default),
// assembles the root filesystem, lays out the A/B disk, and writes the image, its compressed
// copy, SHA256SUMS and the report into the output directory. On error nothing is left in the
// output directory.
func Build(ctx context.Context, s *spec.Spec, opts ...Option) (*Result, error) {
	o := makeOptions(opts)
	clock := newStopwatch()
	board, err := hw.Lookup(s.Board)
	if err != nil {
		return nil, fmt.Errorf("board: %w", err)
	}
	outDir := o.outDir
	if outDir == "" {
		outDir = s.Output.Dir
	}
	agent, err := openAgent(o.agent)
	if err != nil {
		return nil, err
	}

	// 1. Fetch the base image into the cache (download, verify, decompress).
	src, err := fetchBase(ctx, s, board, o)
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	clock.lap("fetch")

	// 1b. The K3s payload when the spec has k3s (else nil): the k3s executable, the checked
	// manifests and their linux/arm64 images, pinned by the lock. Bad input fails here, early.
	k3sOut, err := buildK3s(ctx, s, o)
	if err != nil {
		return nil, err
	}
	if k3sOut != nil {
		clock.lap("k3s")
	}

	// 1c. The OTA keys (ota.signingKey, ota.trustedKeys), checked before the long work.
	otaK, err := loadOTA(s)
	if err != nil {
		return nil, err
	}

	// 2. Read the base: its boot partition and its root filesystem, with full metadata.
	img, err := base.Open(src.RawPath)
	if err != nil {
		return nil, fmt.Errorf("base image %s: %w", src.Name, err)
	}
	defer img.Close()
	bootBase, root, err := readBase(ctx, img, src, o)
	if err != nil {
		return nil, fmt.Errorf("base image %s: %w", src.Name, err)
	}
	clock.lap("read")

	// 3. One epoch for every timestamp the builder sets.
	epoch := chooseEpoch(o.epoch, root)

	// 4. The software bill of materials, from the base's package database before it moves.
	bom, bomWarnings, err := makeSBOM(root, s, board, src, agent, epoch, o.version, k3sOut.sbomComponents()...)
	if err != nil {
		return nil, err
	}

	// 5. The disk layout and the identities derived from stable inputs.
	lay, err := planLayout(s, board)
	if err != nil {
		return nil, err
	}

	// 6. The root filesystem: the base made a read-only slot, users, then overlays.
	release, err := assembleRoot(root, s, board, lay, epoch, agent, o.version, k3sOut)
	if err != nil {
		return nil, fmt.Errorf("root filesystem: %w", err)
	}
	otaAdded, err := installOTAKeys(root, otaK, epoch)
	if err != nil {
		return nil, err
	}
	clock.lap("assemble")

	// 7. The boot partitions of both slots and the config partition.
	fats, err := bootTrees(board, bootBase, lay, release, epoch)
	if err != nil {
		return nil, fmt.Errorf("boot partition: %w", err)
	}

	// 8. Write the disk image into a staging directory beside the outputs.
	stage, err := newStaging(outDir)
	if err != nil {
		return nil, err
	}
	defer stage.cleanup()
	base := s.Name + "-" + board.Name()
	disk, err := writeDisk(ctx, stage.path(base+".img"), lay, fats, root, s, epoch, o)
	if err != nil {
		return nil, err
	}
	clock.lap("write")

	// 8b. The signed update bundle, NAME-BOARD.update, from the slot A partitions just written.
	update, err := writeBundle(ctx, stage, base, s, board, lay, disk, stage.path(base+".img"), fats[hw.RoleBootA], otaK)
	if err != nil {
		return nil, err
	}
	if update != "" {
		clock.lap("bundle")
	}

	// 9. Publish: checksum, compress, report, then move everything into place.
	rep := newReport(s, board, src, agent, lay, disk, append(slices.Clip(release.Additions), otaAdded...), epoch, o.version)
	rep.Warnings = append(rep.Warnings, bomWarnings...)
	rep.Warnings = append(rep.Warnings, otaWarnings(otaK)...)
	rep.K3s = k3sOut.report()
	extras := map[string][]byte{base + ".spdx.json": bom.JSON()}
	res, err := publish(ctx, stage, outDir, base, s.Output.Compress, disk.SHA256, extras, rep, clock, o)
	if err != nil {
		return nil, err
	}
	res.Lock = buildLock(s, src, k3sOut)
	if update != "" {
		res.Update = filepath.Join(outDir, update)
	}
	return res, nil
}

// baseSource is the fetched base image.
type baseSource struct {
	Name string // as the spec names it (path or URL), or the board default's URL
	*fetch.Result
}

func fetchBase(ctx context.Context, s *spec.Spec, board hw.Board, o *options) (*baseSource, error) {
	image, sum := s.Base.Image, s.Base.SHA256
	if image == "" {
		d := board.DefaultBase()
		image, sum = d.URL, d.SHA256
	}
	dir := o.cacheDir
	if dir == "" {
		var err error
		if dir, err = fetch.DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	fopts := []fetch.Option{fetch.WithProgress(o.progress), fetch.WithLogger(o.logger), fetch.WithVersion(o.version)}
	if o.client != nil {
		fopts = append(fopts, fetch.WithClient(o.client))
	}
	c := &fetch.Cache{Dir: dir}
	r, err := c.Base(ctx, image, sum, fopts...)
	if err != nil {
		return nil, err
	}
	return &baseSource{Name: image, Result: r}, nil
}

func readBase(ctx context.Context, img *base.Image, src *baseSource, o *options) (boot, root *tree.Tree, err error) {
	boot, err = img.BootFiles()
	if err != nil {
		return nil, nil, err
	}
	root, err = readRoot(ctx, img, src, o)
	if err != nil {
		return nil, nil, err
	}
	return boot, root, nil
}

// chooseEpoch returns the requested epoch, or the newest mtime of the base's root filesystem.
func chooseEpoch(requested *time.Time, root *tree.Tree) time.Time {
	if requested != nil {
		return requested.UTC()
	}
	var newest time.Time
	_ = root.Walk(func(e *tree.Entry) error {
		if e.ModTime.After(newest) {
			newest = e.ModTime
		}
		return nil
	})
	return time.Unix(newest.Unix(), 0).UTC()
}

// layout is the planned disk: the board's partitions placed in an MBR table.
type layout struct {
	Version int
	Parts   []hw.Partition
	Table   *disk.Table
}

func (l *layout) part(r hw.Role) hw.Partition {
	p, _ := hw.ByRole(l.Parts, r)
	return p
}

func (l *layout) placed(r hw.Role) disk.Placed { return *l.Table.Part(l.part(r).Number) }

func (l *layout) partUUID(r hw.Role) string {
	return disk.PartUUID(l.Table.DiskSignature, l.part(r).Number)
}

func planLayout(s *spec.Spec, board hw.Board) (*layout, error) {
	parts, err := board.Layout(hw.Sizes{Boot: int64(s.Layout.BootSize), System: int64(s.Layout.SystemSize), DataMin: int64(s.Layout.DataMinSize)})
	if err != nil {
		return nil, err
	}
	dp := make([]disk.Part, len(parts))
	for i, p := range parts {
		dp[i] = disk.Part{Number: p.Number, Type: p.Type, Size: p.Size, Name: string(p.Role)}
	}
	tbl, err := disk.Plan(dp, board.Alignment())
	if err != nil {
		return nil, fmt.Errorf("layout: %w", err)
	}
	// Partition identities derive from inputs that stay the same across releases, never from
	// content: an update never rewrites the table, so release 2 must find release 1's partitions.
	tbl.DiskSignature = disk.DiskSignature("edgeimg", s.Name, board.Name(), "layout", strconv.Itoa(board.LayoutVersion()))
	return &layout{Version: board.LayoutVersion(), Parts: parts, Table: tbl}, nil
}

// derive returns n bytes derived from the inputs: filesystem UUIDs and volume IDs.
func derive(n int, inputs ...string) []byte {
	h := sha256.New()
	for _, in := range inputs {
		binary.Write(h, binary.BigEndian, uint32(len(in)))
		io.WriteString(h, in)
	}
	return h.Sum(nil)[:n]
}

func assembleRoot(root *tree.Tree, s *spec.Spec, board hw.Board, lay *layout, epoch time.Time, agent *agentBinary, version string, k3s *k3sStage) (*rootfs.Release, error) {
	dataUUID := lay.partUUID(hw.RoleData)
	rel := rootfs.Release{
		Name: s.Name, Board: board.Name(), Version: s.Version, LayoutVersion: lay.Version,
		Builder: version, DataPartUUID: dataUUID,
	}
	added, err := rootfs.Prepare(root, rootfs.SystemInput{
		Release:        rel,
		Hostname:       s.Hostname,
		Epoch:          epoch,
		Agent:          tree.File(agent.Path),
		AgentSize:      agent.Size,
		GrowUnit:       grow.GrowUnit(dataUUID),
		GrowRequiredBy: grow.GrowUnitRequiredBy(dataUUID),
	})
	if err != nil {
		return nil, err
	}
	ag, err := installAgent(root, s, lay, epoch)
	if err != nil {
		return nil, err
	}
	added = append(added, ag...)
	users := make([]rootfs.User, len(s.Users))
	for i, u := range s.Users {
		users[i] = rootfs.User{Name: u.Name, Groups: u.Groups, Shell: u.Shell,
			SSHAuthorizedKeys: u.SSHAuthorizedKeys, PasswordHash: u.PasswordHash}
		if u.UID != nil {
			users[i].UID = *u.UID
		}
	}
	u, err := rootfs.AddUsers(root, users, epoch)
	if err != nil {
		return nil, err
	}
	added = append(added, u...)
	k, err := mergeK3s(root, k3s, epoch)
	if err != nil {
		return nil, fmt.Errorf("k3s: %w", err)
	}
	added = append(added, k...)
	for i, dir := range s.Overlays {
		o, err := rootfs.ApplyOverlay(root, dir, epoch)
		if err != nil {
			return nil, fmt.Errorf("overlays[%d]: %w", i, err)
		}
		added = append(added, o...)
	}
	return rootfs.WriteRelease(root, rel, added, epoch)
}

func bootTrees(board hw.Board, bootBase *tree.Tree, lay *layout, rel *rootfs.Release, epoch time.Time) (map[hw.Role]*tree.Tree, error) {
	cfg, err := board.ConfigFiles(epoch)
	if err != nil {
		return nil, err
	}
	slotA := board.Slots()[0]
	bootA, err := board.BootFiles(hw.BootInput{Base: bootBase, Slot: slotA, Epoch: epoch,
		RootUUID: disk.PartUUID(lay.Table.DiskSignature, slotA.System), ExtraArgs: []string{rootfs.InitArg}})
	if err != nil {
		return nil, err
	}
	// A copy of the release description, readable without an ext4 reader.
	if err := bootA.WriteFile(rootfs.BootReleasePath, rel.JSON(), 0o644, epoch); err != nil {
		return nil, err
	}
	// Slot B's boot partition is an empty FAT filesystem until an update fills it.
	return map[hw.Role]*tree.Tree{hw.RoleConfig: cfg, hw.RoleBootA: bootA, hw.RoleBootB: tree.New()}, nil
}

type agentBinary struct {
	Path   string
	Size   int64
	SHA256 string
}

func openAgent(p string) (*agentBinary, error) {
	if p == "" {
		return nil, errors.New("agent: no edgeimg-agent binary given (build it with `make agent`, or pass --agent)")
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("agent: %s is not a regular file", p)
	}
	sum, err := output.SHA256File(p)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return &agentBinary{Path: p, Size: st.Size(), SHA256: sum}, nil
}

// staging is a temporary directory inside the output directory: outputs are written there
// and renamed into place only when all of them are complete.
type staging struct {
	dir   string
	added []Output // big outputs written into the staging directory by a stage (the OTA bundle)
}

// add records a file a stage wrote into the staging directory, for SHA256SUMS and the report.
func (s *staging) add(o Output) { s.added = append(s.added, o) }

func newStaging(outDir string) (*staging, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	d, err := os.MkdirTemp(outDir, ".edgeimg-build-")
	if err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	return &staging{dir: d}, nil
}

func (s *staging) path(name string) string { return filepath.Join(s.dir, name) }
func (s *staging) cleanup()                { os.RemoveAll(s.dir) }
