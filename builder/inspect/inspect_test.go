package inspect_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/builder"
	"github.com/edgeimg/edgeimg/builder/inspect"
	"github.com/edgeimg/edgeimg/builder/spec"
	_ "github.com/edgeimg/edgeimg/hw/rpi4"
	"github.com/edgeimg/edgeimg/internal/basegen"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

const testEpoch = 1700000000

// fixtures are shared by the tests: a generated base image (not made by edgeimg) and an
// image built from it.
var fixtures struct {
	base, built sync.Once
	dir         string
	basePath    string
	image       string
	report      *builder.Report
	err         error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtures.dir != "" {
		os.RemoveAll(fixtures.dir)
	}
	os.Exit(code)
}

func base(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"mke2fs", "mkfs.vfat", "sfdisk", "mcopy"} {
		testutil.NeedTool(t, tool)
	}
	fixtures.base.Do(func() {
		fixtures.dir, fixtures.err = os.MkdirTemp("", "edgeimg-inspect-test-")
		if fixtures.err != nil {
			return
		}
		fixtures.basePath = filepath.Join(fixtures.dir, "base.img")
		fixtures.err = basegen.Generate(context.Background(), fixtures.basePath, basegen.Options{Small: true, Seed: 11})
	})
	if fixtures.err != nil {
		t.Fatal(fixtures.err)
	}
	return fixtures.basePath
}

// built returns an image the builder made from the base, and its report.
func built(t *testing.T) (string, *builder.Report) {
	t.Helper()
	b := base(t)
	fixtures.built.Do(func() {
		fixtures.err = func() error {
			dir := filepath.Join(fixtures.dir, "project")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			agent := filepath.Join(dir, "edgeimg-agent")
			if err := os.WriteFile(agent, []byte("#!/bin/sh\n# stand-in\n"), 0o755); err != nil {
				return err
			}
			text := fmt.Sprintf("name: gw\nboard: rpi4\nversion: \"7\"\nbase:\n  image: %s\n"+
				"layout:\n  bootSize: 64MiB\n  systemSize: 256MiB\n  dataMinSize: 64MiB\noutput:\n  compress: none\n", b)
			p := filepath.Join(dir, "edgeimg.yaml")
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				return err
			}
			s, err := spec.Load(p)
			if err != nil {
				return err
			}
			s.SetDefaults(spec.Defaults{})
			if err := s.Validate(); err != nil {
				return err
			}
			res, err := builder.Build(context.Background(), s, builder.WithAgent(agent), builder.WithEpoch(time.Unix(testEpoch, 0)),
				builder.WithCacheDir(filepath.Join(dir, "cache")), builder.WithVersion("v-test"))
			if err != nil {
				return err
			}
			fixtures.image, fixtures.report = res.Image, res.Report
			return nil
		}()
	})
	if fixtures.err != nil {
		t.Fatal(fixtures.err)
	}
	return fixtures.image, fixtures.report
}

type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		Partitions []struct {
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func sfdisk(t *testing.T, img string) sfdiskTable {
	t.Helper()
	var tbl sfdiskTable
	if err := json.Unmarshal([]byte(testutil.Run(t, "sfdisk", "--json", img)), &tbl); err != nil {
		t.Fatal(err)
	}
	return tbl
}

// mtype reads a file of the FAT filesystem at offset in img with mtools.
func mtype(t *testing.T, img string, offset int64, name string) string {
	t.Helper()
	return testutil.Run(t, "mtype", "-i", fmt.Sprintf("%s@@%d", img, offset), "::"+name)
}

func TestInspectBuilt(t *testing.T) {
	imgPath, rep := built(t)
	img, err := inspect.Inspect(imgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(imgPath)
	if err != nil {
		t.Fatal(err)
	}
	if img.Path != imgPath || img.Size != st.Size() || img.Table != "mbr" || img.DiskSignature != rep.DiskSignature || !img.Edgeimg {
		t.Errorf("image: path %s size %d table %s signature %s edgeimg %v; want %s %d mbr %s true",
			img.Path, img.Size, img.Table, img.DiskSignature, img.Edgeimg, imgPath, st.Size(), rep.DiskSignature)
	}

	// The partition table, against sfdisk's reading and the build report.
	tbl := sfdisk(t, imgPath).PartitionTable
	if len(img.Partitions) != len(tbl.Partitions) || len(img.Partitions) != 7 {
		t.Fatalf("%d partitions, sfdisk sees %d, want 7", len(img.Partitions), len(tbl.Partitions))
	}
	sig := strings.TrimPrefix(rep.DiskSignature, "0x")
	want := []struct{ typ, fs, label string }{
		{"0x0c", "vfat", "EDGECONFIG"}, {"0x0c", "vfat", "BOOT-A"}, {"0x0c", "vfat", "BOOT-B"},
		{"0x0f", "extended", ""}, {"0x83", "ext4", "edgeimg-sys"}, {"0x83", "none", ""}, {"0x83", "none", ""},
	}
	for i, p := range img.Partitions {
		s := tbl.Partitions[i]
		w := want[i]
		if p.Number != i+1 || p.Start != s.Start*512 || p.Size != s.Size*512 || "0x"+fmt.Sprintf("%02s", s.Type) != p.Type {
			t.Errorf("partition %d: number %d start %d size %d type %s; sfdisk: start %d size %d type %s",
				i+1, p.Number, p.Start, p.Size, p.Type, s.Start*512, s.Size*512, s.Type)
		}
		if p.Type != w.typ || p.FS != w.fs || p.Label != w.label || p.PartUUID != fmt.Sprintf("%s-%02x", sig, i+1) || p.Name != "" {
			t.Errorf("partition %d: type %s fs %s label %q partuuid %s name %q; want %s %s %q %s-%02x",
				i+1, p.Type, p.FS, p.Label, p.PartUUID, p.Name, w.typ, w.fs, w.label, sig, i+1)
		}
		for _, rp := range rep.Partitions {
			if rp.Number == p.Number && (rp.Start != p.Start || rp.Size != p.Size || rp.PartUUID != p.PartUUID) {
				t.Errorf("partition %d: start %d size %d partuuid %s; the report has %d %d %s", p.Number, p.Start, p.Size, p.PartUUID, rp.Start, rp.Size, rp.PartUUID)
			}
		}
	}

	// The FAT partitions: their files and boot configuration, as mtools reads them.
	cfg, bootA, bootB := img.Partitions[0], img.Partitions[1], img.Partitions[2]
	contains := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	if !contains(cfg.Files, "autoboot.txt") || len(cfg.Config) == 0 {
		t.Errorf("config partition: files %v, config %v", cfg.Files, cfg.Config)
	}
	for _, f := range []string{"cmdline.txt", "config.txt", "edgeimg/", "start4.elf"} {
		if !contains(bootA.Files, f) {
			t.Errorf("boot A files %v lack %s", bootA.Files, f)
		}
	}
	if len(bootB.Files) != 0 || len(bootB.Config) != 0 {
		t.Errorf("boot B (empty until the first update): files %v, config %v", bootB.Files, bootB.Config)
	}
	for _, c := range []struct {
		p    inspect.Partition
		name string
		has  []string
	}{
		{cfg, "autoboot.txt", []string{"tryboot_a_b=1", "boot_partition=2"}},
		{bootA, "cmdline.txt", []string{"root=PARTUUID=" + img.Partitions[4].PartUUID, "panic=10"}},
		{bootA, "config.txt", []string{"dtparam=watchdog=on"}},
	} {
		got := c.p.Config[c.name]
		if strings.TrimSpace(got) != strings.TrimRight(mtype(t, imgPath, c.p.Start, c.name), " \n#") {
			t.Errorf("partition %d %s:\n%s\nmtype reads:\n%s", c.p.Number, c.name, got, mtype(t, imgPath, c.p.Start, c.name))
		}
		for _, h := range c.has {
			if !strings.Contains(got, h) {
				t.Errorf("partition %d %s lacks %q:\n%s", c.p.Number, c.name, h, got)
			}
		}
	}

	// The release description.
	r := img.Release
	if r == nil {
		t.Fatal("no release")
	}
	if r.Name != "gw" || r.Board != "rpi4" || r.Version != "7" || r.LayoutVersion != rep.LayoutVersion || r.BuildEpoch != testEpoch ||
		r.Builder != "v-test" || r.DataPartUUID != img.Partitions[6].PartUUID {
		t.Errorf("release %+v", r)
	}
	if strings.Join(r.Additions, "\n") != strings.Join(rep.Additions, "\n") || len(r.Additions) == 0 {
		t.Errorf("release additions %v, report additions %v", r.Additions, rep.Additions)
	}

	// Text and JSON.
	var b bytes.Buffer
	if err := img.Text(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, w := range []string{
		imgPath + ": ", "mbr partition table, disk signature " + rep.DiskSignature,
		"#  start sector  size MiB  type  partuuid",
		fmt.Sprintf("5  %d", img.Partitions[4].Start/512), img.Partitions[4].PartUUID + "  ext4      edgeimg-sys",
		"--- partition 1: autoboot.txt\n", "--- partition 2: cmdline.txt\n",
		"release: gw for rpi4, version 7, layout ", "built by edgeimg v-test at epoch 1700000000",
		"data partition: PARTUUID=" + img.Partitions[6].PartUUID, "builder additions:\n  " + r.Additions[0],
	} {
		if !strings.Contains(text, w) {
			t.Errorf("text lacks %q:\n%s", w, text)
		}
	}
	if strings.Contains(text, "not made by edgeimg") || strings.Contains(text, " \n") {
		t.Errorf("text says the image is foreign, or has trailing spaces:\n%s", text)
	}
	js, err := json.Marshal(img)
	if err != nil {
		t.Fatal(err)
	}
	var back inspect.Image
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&back); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(&back)
	if !bytes.Equal(js, again) {
		t.Errorf("JSON does not round-trip:\n%s\n%s", js, again)
	}
}

// TestInspectForeign inspects an image edgeimg did not make: the generated base (Raspberry
// Pi OS-like, made with mkfs.vfat and mke2fs).
func TestInspectForeign(t *testing.T) {
	p := base(t)
	img, err := inspect.Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	tbl := sfdisk(t, p).PartitionTable
	if img.Table != "mbr" || img.DiskSignature != tbl.ID || img.Edgeimg || img.Release != nil || len(img.Partitions) != 2 {
		t.Fatalf("table %s signature %s (sfdisk %s) edgeimg %v release %v, %d partitions", img.Table, img.DiskSignature, tbl.ID, img.Edgeimg, img.Release, len(img.Partitions))
	}
	boot, root := img.Partitions[0], img.Partitions[1]
	if boot.FS != "vfat" || boot.Label != "bootfs" || boot.Type != "0x0c" || root.FS != "ext4" || root.Label != "rootfs" || root.Type != "0x83" {
		t.Errorf("partitions %+v %+v", boot, root)
	}
	if boot.Config["cmdline.txt"] == "" || boot.Config["config.txt"] == "" {
		t.Errorf("boot configuration %v", boot.Config)
	}
	if want := strings.TrimSpace(mtype(t, p, boot.Start, "cmdline.txt")); boot.Config["cmdline.txt"] != want {
		t.Errorf("cmdline.txt %q, mtype reads %q", boot.Config["cmdline.txt"], want)
	}
	var b bytes.Buffer
	if err := img.Text(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "not made by edgeimg: no boot partition holds edgeimg/release.json") || strings.Contains(b.String(), "release:") {
		t.Errorf("text:\n%s", b.String())
	}
	js, _ := json.Marshal(img)
	if !bytes.Contains(js, []byte(`"edgeimg":false`)) || bytes.Contains(js, []byte(`"release"`)) {
		t.Errorf("JSON: %s", js)
	}
}

// TestInspectGPT inspects a GPT disk made with sfdisk, mkfs.vfat and mke2fs.
func TestInspectGPT(t *testing.T) {
	for _, tool := range []string{"sfdisk", "mkfs.vfat", "mke2fs"} {
		testutil.NeedTool(t, tool)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "gpt.img")
	const mib = 1 << 20
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(100 * mib); err != nil {
		t.Fatal(err)
	}
	f.Close()
	script := "label: gpt\nlabel-id: 1B2C3D4E-0000-4000-8000-0000000000AA\n" +
		"start=2048, size=81920, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, uuid=11111111-2222-4333-8444-555555555555, name=\"boot\"\n" +
		"start=83968, size=32768, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root fs\"\n"
	cmd := exec.Command(testutil.NeedTool(t, "sfdisk"), "-q", img)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	fat, ext := filepath.Join(dir, "fat"), filepath.Join(dir, "ext")
	for _, p := range []struct {
		name string
		size int64
	}{{fat, 40 * mib}, {ext, 16 * mib}} {
		f, err := os.Create(p.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(p.size); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	testutil.Run(t, "mkfs.vfat", "-F", "32", "-n", "GPTBOOT", fat)
	testutil.Run(t, "mcopy", "-i", fat, writeTemp(t, dir, "cmdline.txt", "console=tty1 root=/dev/sda2\n"), "::cmdline.txt")
	testutil.Run(t, "mke2fs", "-q", "-t", "ext4", "-L", "gptroot", ext)
	copyInto(t, img, fat, 2048*512)
	copyInto(t, img, ext, 83968*512)

	got, err := inspect.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	tbl := sfdisk(t, img).PartitionTable
	if got.Table != "gpt" || got.DiskSignature != strings.ToLower(tbl.ID) || len(got.Partitions) != 2 || got.Edgeimg {
		t.Fatalf("table %s disk %s (sfdisk %s), %d partitions, edgeimg %v", got.Table, got.DiskSignature, tbl.ID, len(got.Partitions), got.Edgeimg)
	}
	for i, p := range got.Partitions {
		s := tbl.Partitions[i]
		if p.Number != i+1 || p.Start != s.Start*512 || p.Size != s.Size*512 || p.Type != strings.ToLower(s.Type) ||
			p.PartUUID != strings.ToLower(s.UUID) || p.Name != s.Name {
			t.Errorf("partition %d: %+v; sfdisk %+v", i+1, p, s)
		}
	}
	if b := got.Partitions[0]; b.FS != "vfat" || b.Label != "GPTBOOT" || b.Config["cmdline.txt"] != "console=tty1 root=/dev/sda2" ||
		b.PartUUID != "11111111-2222-4333-8444-555555555555" || b.Name != "boot" {
		t.Errorf("boot partition %+v", b)
	}
	if r := got.Partitions[1]; r.FS != "ext4" || r.Label != "gptroot" || r.Name != "root fs" {
		t.Errorf("root partition %+v", r)
	}
	var b bytes.Buffer
	if err := got.Text(&b); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"gpt partition table, disk GUID 1b2c3d4e-0000-4000-8000-0000000000aa", "  name\n", "  root fs\n", "not made by edgeimg"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("text lacks %q:\n%s", w, b.String())
		}
	}
}

func writeTemp(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func copyInto(t *testing.T, img, part string, offset int64) {
	t.Helper()
	src, err := os.Open(part)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := io.Copy(io.NewOffsetWriter(dst, offset), src); err != nil {
		t.Fatal(err)
	}
}

// TestInspectErrors: what is not a disk image is one clear error naming the file.
func TestInspectErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := bytes.Repeat([]byte("not a disk "), 100000)
	protective := make([]byte, 1<<20)
	protective[0x1BE+4] = 0xee
	binary.LittleEndian.PutUint32(protective[0x1BE+8:], 1)
	binary.LittleEndian.PutUint32(protective[0x1BE+12:], 2047)
	protective[510], protective[511] = 0x55, 0xaa
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty.img", nil, "too small for a partition table"},
		{"tiny.img", []byte{1, 2, 3}, "too small for a partition table"},
		{"garbage.img", garbage, "no MBR signature"},
		{"protective.img", protective, "protective MBR without a GPT header"},
	}
	// A truncated image: its partitions run past the end of the file.
	b := base(t)
	trunc, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, struct {
		name string
		data []byte
		want string
	}{"truncated.img", trunc[:8<<20], "outside the disk"})
	for _, c := range cases {
		p := writeTemp(t, dir, c.name, string(c.data))
		_, err := inspect.Inspect(p)
		if err == nil || !strings.Contains(err.Error(), p+": not a disk image: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error naming the file and %q", c.name, err, c.want)
		}
	}
	if _, err := inspect.Inspect(filepath.Join(dir, "missing.img")); err == nil || !strings.Contains(err.Error(), "missing.img") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := inspect.Inspect(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
}

// TestInspectCorruptFAT: a FAT partition whose boot sector is damaged is shown as far as it
// can be read, without a panic.
func TestInspectCorruptFAT(t *testing.T) {
	src := base(t)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	img, err := inspect.Inspect(src)
	if err != nil {
		t.Fatal(err)
	}
	start := img.Partitions[0].Start
	// Keep the FAT32 signature the probe looks at; break the geometry go-diskfs reads.
	for _, off := range []int64{11, 13, 14, 16, 36, 44} {
		data[start+off] = 0xff
	}
	p := writeTemp(t, t.TempDir(), "corrupt.img", string(data))
	got, err := inspect.Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Partitions[0].FS != "vfat" || got.Partitions[1].Label != "rootfs" || got.Partitions[0].Config != nil ||
		!strings.Contains(got.Partitions[0].Error, "reading the FAT filesystem: ") {
		t.Errorf("corrupt FAT: %+v", got.Partitions)
	}
	var b bytes.Buffer
	if err := got.Text(&b); err != nil || !strings.Contains(b.String(), "partition 1: reading the FAT filesystem: ") {
		t.Errorf("text (%v):\n%s", err, b.String())
	}
}

// TestInspectFATLoop: a cluster chain that loops (go-diskfs would follow it forever) is
// reported, not followed.
func TestInspectFATLoop(t *testing.T) {
	src := base(t)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	img, err := inspect.Inspect(src)
	if err != nil {
		t.Fatal(err)
	}
	start := img.Partitions[0].Start
	reserved := int64(binary.LittleEndian.Uint16(data[start+14:]))
	root := binary.LittleEndian.Uint32(data[start+44:])
	// The root directory's first cluster points to itself.
	binary.LittleEndian.PutUint32(data[start+reserved*512+4*int64(root):], root)
	p := writeTemp(t, t.TempDir(), "loop.img", string(data))
	got, err := inspect.Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	if e := got.Partitions[0].Error; !strings.Contains(e, fmt.Sprintf("cluster chain through cluster %d loops", root)) {
		t.Errorf("looping FAT: error %q", e)
	}
}
