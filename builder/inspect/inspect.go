package inspect

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/edgeimg/edgeimg/builder/disk"
	"github.com/edgeimg/edgeimg/builder/rootfs"
)

// Image is what Inspect found.
type Image struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	// Table is the partition table: "mbr" or "gpt".
	Table string `json:"table"`
	// DiskSignature is the MBR disk signature ("0x1234abcd") or the GPT disk GUID.
	DiskSignature string      `json:"diskSignature"`
	Partitions    []Partition `json:"partitions"`
	// Edgeimg reports whether edgeimg made the image: a boot partition holds its release
	// description (edgeimg/release.json).
	Edgeimg bool `json:"edgeimg"`
	// Release is that release description, nil when Edgeimg is false.
	Release *rootfs.Release `json:"release,omitempty"`
}

// Partition is one partition and what it holds.
type Partition struct {
	Number int `json:"number"`
	// Type is the MBR type code ("0x0c") or the GPT type GUID.
	Type string `json:"type"`
	// Start and Size are in bytes.
	Start int64 `json:"start"`
	Size  int64 `json:"size"`
	// PartUUID is what root=PARTUUID= names: SIGNATURE-NN for MBR, the partition GUID for GPT.
	PartUUID string `json:"partuuid"`
	// Name is the GPT partition name (MBR has none).
	Name string `json:"name,omitempty"`
	// FS is "vfat", "ext4", "extended" (the MBR container of logical partitions) or "none".
	FS    string   `json:"fs"`
	Label string   `json:"label,omitempty"`
	Files []string `json:"files,omitempty"` // top-level files of a FAT partition
	// Config holds the boot configuration files found in a FAT partition: autoboot.txt,
	// config.txt, cmdline.txt, edgeimg/device.yaml.
	Config map[string]string `json:"config,omitempty"`
	// Error says why the filesystem could not be read, when it could not.
	Error string `json:"error,omitempty"`
}

// sectorSize is the logical sector size of image files.
const sectorSize = 512

// Inspect reads the disk image at path, which need not have been made by edgeimg: an MBR
// (with logical partitions) or GPT partition table, and the FAT and ext4 filesystems in it.
// The file is untrusted: a file that is not a disk image is an error naming it.
func Inspect(path string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	img := &Image{Path: path, Size: st.Size()}
	if err := readTable(f, img); err != nil {
		return nil, fmt.Errorf("%s: not a disk image: %w", path, err)
	}
	be := file.New(f, true)
	for i := range img.Partitions {
		ip := &img.Partitions[i]
		if ip.FS == "extended" {
			continue
		}
		ip.FS = "none"
		if ip.Start < 0 || ip.Size <= 0 || ip.Start > img.Size || ip.Size > img.Size-ip.Start {
			continue // a GPT entry beyond a truncated file; disk.Read rejects these for MBR
		}
		switch probe(f, ip.Start) {
		case "vfat":
			ip.FS = "vfat"
			// The boot sector's label, for what go-diskfs cannot read (FAT12, FAT16).
			ip.Label = fatLabel(f, ip.Start)
			// go-diskfs may panic on a corrupt filesystem: show what can be read.
			err := guard(func() error {
				if err := checkFAT32(f, ip.Start, ip.Size); err != nil {
					return err
				}
				fs, err := fat32.Read(be, ip.Size, ip.Start, sectorSize)
				if err != nil {
					return err
				}
				ip.Label = strings.TrimSpace(fs.Label())
				if entries, err := fs.ReadDir("."); err == nil {
					for _, e := range entries {
						n := e.Name()
						if e.IsDir() {
							n += "/"
						}
						ip.Files = append(ip.Files, n)
					}
					sort.Strings(ip.Files)
				}
				if b, err := readFAT(fs, rootfs.BootReleasePath); err == nil && img.Release == nil {
					var r rootfs.Release
					if json.Unmarshal(b, &r) == nil {
						img.Release = &r
						img.Edgeimg = true
					}
				}
				for _, name := range []string{"autoboot.txt", "config.txt", "cmdline.txt", "edgeimg/device.yaml"} {
					if b, err := readFAT(fs, name); err == nil {
						if ip.Config == nil {
							ip.Config = map[string]string{}
						}
						ip.Config[name] = strings.TrimRight(string(b), " \n#")
					}
				}
				return nil
			})
			if err != nil {
				ip.Error = "reading the FAT filesystem: " + err.Error()
			}
		case "ext4":
			// go-diskfs reads only ext4 with metadata_csum, which the system slot (made by
			// tar2ext4) does not have: read the label from the superblock itself.
			ip.FS = "ext4"
			ip.Label = ext4Label(f, ip.Start)
		}
	}
	return img, nil
}

// readTable reads the GPT (when sector 1 holds its signature) or MBR partition table into img.
func readTable(f *os.File, img *Image) error {
	if img.Size < 2*sectorSize {
		return fmt.Errorf("%d bytes is too small for a partition table", img.Size)
	}
	hdr := make([]byte, 8)
	if _, err := f.ReadAt(hdr, sectorSize); err != nil {
		return err
	}
	if string(hdr) == "EFI PART" {
		return readGPT(f, img)
	}
	tbl, err := disk.Read(f, img.Size)
	if err != nil {
		return err
	}
	img.Table = "mbr"
	img.DiskSignature = fmt.Sprintf("0x%08x", tbl.DiskSignature)
	for _, p := range tbl.Parts {
		if p.Type == 0xee {
			return errors.New("protective MBR without a GPT header in sector 1")
		}
		ip := Partition{Number: p.Number, Type: fmt.Sprintf("0x%02x", p.Type), Start: p.Start, Size: p.Size,
			PartUUID: disk.PartUUID(tbl.DiskSignature, p.Number)}
		if disk.IsExtended(p.Type) {
			ip.FS = "extended"
		}
		img.Partitions = append(img.Partitions, ip)
	}
	return nil
}

func readGPT(f *os.File, img *Image) error {
	var t *gpt.Table
	err := guard(func() error {
		var err error
		t, err = gpt.Read(file.New(f, true), sectorSize, sectorSize)
		return err
	})
	if err != nil {
		return fmt.Errorf("reading the GPT: %w", err)
	}
	img.Table = "gpt"
	img.DiskSignature = strings.ToLower(t.GUID)
	for _, p := range t.Partitions {
		if p == nil || p.Type == gpt.Unused || p.Size == 0 {
			continue
		}
		img.Partitions = append(img.Partitions, Partition{
			Number: p.Index, Type: strings.ToLower(string(p.Type)), Start: p.GetStart(), Size: p.GetSize(),
			PartUUID: strings.ToLower(p.GUID), Name: p.Name,
		})
	}
	return nil
}

// guard runs fn and turns a panic in it (go-diskfs panics on some corrupt input) into an error.
func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("corrupt data: %v", r)
		}
	}()
	return fn()
}

// readFAT reads a small file of a FAT filesystem. go-diskfs v1.9.4 reads a file to the end
// of its last cluster, so the size comes from the directory entry.
func readFAT(fs *fat32.FileSystem, name string) ([]byte, error) {
	// go-diskfs's ReadDir takes io/fs paths: "." for the root, no leading slash.
	dir, base := path.Dir(name), path.Base(name)
	entries, err := fs.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.Name() != base || e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		if info.Size() > 1<<20 {
			return nil, fmt.Errorf("%s: %d bytes is too large to show", name, info.Size())
		}
		f, err := fs.OpenFile("/"+name, os.O_RDONLY)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return io.ReadAll(io.LimitReader(f, info.Size()))
	}
	return nil, fmt.Errorf("%s: %w", name, os.ErrNotExist)
}

// fatLabel reads the volume label of the FAT boot sector at start (the root directory's label
// entry, which go-diskfs reads for FAT32, usually agrees).
func fatLabel(r io.ReaderAt, start int64) string {
	b := make([]byte, 90)
	if _, err := r.ReadAt(b, start); err != nil {
		return ""
	}
	l := b[43:54]
	if string(b[82:87]) == "FAT32" {
		l = b[71:82]
	}
	return strings.TrimSpace(strings.TrimRight(string(l), "\x00"))
}

func ext4Label(r io.ReaderAt, start int64) string {
	b := make([]byte, 16)
	if _, err := r.ReadAt(b, start+1024+0x78); err != nil {
		return ""
	}
	return strings.TrimRight(string(b), "\x00")
}

// probe recognises FAT and ext4 by their magic numbers.
func probe(r io.ReaderAt, start int64) string {
	b := make([]byte, 2048)
	if _, err := r.ReadAt(b, start); err != nil {
		return ""
	}
	if b[1024+0x38] == 0x53 && b[1024+0x39] == 0xEF {
		return "ext4"
	}
	if b[510] == 0x55 && b[511] == 0xAA && (string(b[82:87]) == "FAT32" || string(b[54:59]) == "FAT16" || string(b[54:59]) == "FAT12") {
		return "vfat"
	}
	return ""
}

// Text writes a human-readable description of img.
func (img *Image) Text(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %.1f MiB, %s partition table, disk %s %s\n", img.Path, mib(img.Size), img.Table,
		map[string]string{"mbr": "signature", "gpt": "GUID"}[img.Table], img.DiskSignature)
	if !img.Edgeimg {
		fmt.Fprintf(&b, "not made by edgeimg: no boot partition holds %s\n", rootfs.BootReleasePath)
	}
	b.WriteString("\n")
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	header := "#\tstart sector\tsize MiB\ttype\tpartuuid\tfs\tlabel"
	if img.Table == "gpt" {
		header += "\tname"
	}
	fmt.Fprintln(tw, header)
	for _, p := range img.Partitions {
		fmt.Fprintf(tw, "%d\t%d\t%.1f\t%s\t%s\t%s\t%s", p.Number, p.Start/sectorSize, mib(p.Size),
			p.Type, p.PartUUID, orDash(p.FS), orDash(p.Label))
		if img.Table == "gpt" {
			fmt.Fprintf(tw, "\t%s", orDash(p.Name))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimSuffix(table.String(), "\n"), "\n") {
		b.WriteString(strings.TrimRight(l, " ") + "\n")
	}
	for _, p := range img.Partitions {
		if p.Error != "" {
			fmt.Fprintf(&b, "partition %d: %s\n", p.Number, p.Error)
		}
	}
	for _, p := range img.Partitions {
		names := make([]string, 0, len(p.Config))
		for n := range p.Config {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&b, "\n--- partition %d: %s\n%s\n", p.Number, n, p.Config[n])
		}
	}
	if r := img.Release; r != nil {
		fmt.Fprintf(&b, "\nrelease: %s for %s, version %s, layout %d, built by edgeimg %s at epoch %d\n", r.Name, r.Board, r.Version, r.LayoutVersion, r.Builder, r.BuildEpoch)
		fmt.Fprintf(&b, "data partition: PARTUUID=%s (made and grown on first boot)\nbuilder additions:\n", r.DataPartUUID)
		for _, a := range r.Additions {
			fmt.Fprintf(&b, "  %s\n", a)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
