package inspect

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"

	"github.com/edgeimg/edgeimg/builder/disk"
	"github.com/edgeimg/edgeimg/builder/rootfs"
)

// Image is what Inspect found.
type Image struct {
	Path          string          `json:"path"`
	Size          int64           `json:"size"`
	Table         string          `json:"table"`
	DiskSignature string          `json:"diskSignature"`
	Partitions    []Partition     `json:"partitions"`
	Release       *rootfs.Release `json:"release,omitempty"`
}

// Partition is one partition and what it holds.
type Partition struct {
	Number   int               `json:"number"`
	Type     string            `json:"type"`
	Start    int64             `json:"start"`
	Size     int64             `json:"size"`
	PartUUID string            `json:"partuuid"`
	FS       string            `json:"fs"`
	Label    string            `json:"label,omitempty"`
	Files    []string          `json:"files,omitempty"`  // top-level files of a FAT partition
	Config   map[string]string `json:"config,omitempty"` // autoboot.txt, config.txt, cmdline.txt
}

// Inspect reads the image at path.
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
	tbl, err := disk.Read(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	img := &Image{Path: path, Size: st.Size(), Table: "mbr", DiskSignature: fmt.Sprintf("0x%08x", tbl.DiskSignature)}
	be := file.New(f, true)
	for _, p := range tbl.Parts {
		ip := Partition{Number: p.Number, Type: fmt.Sprintf("0x%02x", p.Type), Start: p.Start, Size: p.Size,
			PartUUID: disk.PartUUID(tbl.DiskSignature, p.Number)}
		if disk.IsExtended(p.Type) {
			ip.FS = "extended"
			img.Partitions = append(img.Partitions, ip)
			continue
		}
		switch probe(f, p.Start) {
		case "vfat":
			ip.FS = "vfat"
			if fs, err := fat32.Read(be, p.Size, p.Start, 512); err == nil {
				ip.Label = strings.TrimSpace(fs.Label())
				if entries, err := fs.ReadDir("/"); err == nil {
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
			}
		case "ext4":
			// go-diskfs reads only ext4 with metadata_csum, which the system slot (made by
			// tar2ext4) does not have: read the label from the superblock itself.
			ip.FS = "ext4"
			ip.Label = ext4Label(f, p.Start)
		default:
			ip.FS = "none"
		}
		img.Partitions = append(img.Partitions, ip)
	}
	return img, nil
}

// readFAT reads a small file of a FAT filesystem. go-diskfs v1.9.4 reads a file to the end
// of its last cluster, so the size comes from the directory entry.
func readFAT(fs *fat32.FileSystem, name string) ([]byte, error) {
	dir, base := path.Split("/" + name)
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
	fmt.Fprintf(&b, "%s: %d MiB, %s partition table, disk signature %s\n\n", img.Path, img.Size>>20, img.Table, img.DiskSignature)
	fmt.Fprintf(&b, "%-3s %-9s %-6s %10s %10s  %-12s %-8s %s\n", "#", "partuuid", "type", "start MiB", "size MiB", "label", "fs", "")
	for _, p := range img.Partitions {
		fmt.Fprintf(&b, "%-3d %-9s %-6s %10d %10d  %-12s %-8s\n", p.Number, p.PartUUID[9:], p.Type, p.Start>>20, p.Size>>20, p.Label, p.FS)
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
