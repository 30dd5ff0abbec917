package personalize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"reflect"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"gopkg.in/yaml.v3"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/builder/fatfs"
	"github.com/edgeimg/edgeimg/builder/inspect"
	"github.com/edgeimg/edgeimg/builder/rootfs"
	"github.com/edgeimg/edgeimg/builder/tree"
)

// SettingsPath is where the settings go on the config partition.
const SettingsPath = device.SettingsOnConfig

// Limits on what the config partition may hold: it is small and holds a few small files.
const (
	maxFiles      = 4096
	maxDepth      = 16
	maxTotalBytes = 512 << 20
)

const sectorSize = 512

// Result says what Personalize wrote.
type Result struct {
	// Partition is the number of the config partition; PartUUID its PARTUUID.
	Partition int
	PartUUID  string
	// Settings is the text of edgeimg/device.yaml as written.
	Settings []byte
	// Kept are the other files of the partition, rewritten unchanged (autoboot.txt, …).
	Kept []string
	// BytesWritten is how much of the image changed.
	BytesWritten int64
}

// Render returns device.yaml for s: a comment, then the settings as YAML. It checks s as
// the agent does and that the agent's parser reads back exactly s.
func Render(s *device.Settings) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteString("# edgeimg device settings, written by edgeimg personalize. The agent imports them onto the\n" +
		"# data partition at boot and removes the enrollment token and the Wi-Fi psk from this file.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(s); err != nil {
		return nil, fmt.Errorf("encoding the settings: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding the settings: %w", err)
	}
	out := buf.Bytes()
	back, err := device.ParseSettings(out)
	if err != nil {
		return nil, fmt.Errorf("the agent would not read the settings back: %w", err)
	}
	if !reflect.DeepEqual(normal(back), normal(s)) {
		return nil, errors.New("the agent would read different settings back")
	}
	return out, nil
}

// normal makes empty collections nil, for comparing settings.
func normal(s *device.Settings) device.Settings {
	c := *s
	if len(c.Labels) == 0 {
		c.Labels = nil
	}
	if c.Network != nil {
		n := *c.Network
		if len(n.DNS) == 0 {
			n.DNS = nil
		}
		c.Network = &n
	}
	return c
}

// Personalize writes s as edgeimg/device.yaml into the config partition of the edgeimg
// image at imagePath (the first FAT partition, holding autoboot.txt), replacing any
// device.yaml there and keeping every other file byte for byte.
//
// The partition is rebuilt whole (builder/fatfs, with the same label and volume ID) in a
// temporary file and checked (every kept file, and the settings as the agent parses them)
// before the image is touched; then only the parts of the partition that changed are
// written, in place. Anything wrong — the settings, an image not made by edgeimg, a
// partition that cannot be read — is found before the first write, leaving the image as it
// was. The timestamps of the partition are the image's build epoch, so the same image and
// settings give the same bytes.
func Personalize(imagePath string, s *device.Settings) (*Result, error) {
	settings, err := Render(s)
	if err != nil {
		return nil, fmt.Errorf("device settings: %w", err)
	}

	// 1. The image: made by edgeimg, with a readable config partition.
	img, err := inspect.Inspect(imagePath)
	if err != nil {
		if ext := path.Ext(imagePath); ext == ".zst" || ext == ".xz" || ext == ".gz" {
			return nil, fmt.Errorf("%w (personalize the raw .img, not the compressed %s)", err, ext)
		}
		return nil, err
	}
	if !img.Edgeimg || img.Release == nil {
		return nil, fmt.Errorf("%s was not made by edgeimg: no boot partition holds %s", imagePath, rootfs.BootReleasePath)
	}
	part, err := configPartition(img)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", imagePath, err)
	}
	epoch := time.Unix(img.Release.BuildEpoch, 0).UTC()

	f, err := os.OpenFile(imagePath, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if st.Size() < part.Start+part.Size {
		return nil, fmt.Errorf("%s: partition %d ends past the end of the file", imagePath, part.Number)
	}

	// 2. Every file of the partition, and its identity.
	label, volID, err := identity(f, part.Start)
	if err != nil {
		return nil, fmt.Errorf("%s: partition %d: %w", imagePath, part.Number, err)
	}
	files, err := readAll(f, part.Start, part.Size)
	if err != nil {
		return nil, fmt.Errorf("%s: reading partition %d: %w", imagePath, part.Number, err)
	}
	var kept []string
	var out []fatfs.File
	hasDir := false
	for _, fl := range files {
		switch {
		case strings.EqualFold(fl.Path, SettingsPath):
			continue // replaced
		case strings.EqualFold(fl.Path, path.Dir(SettingsPath)) && fl.Dir:
			hasDir = true
		case !fl.Dir:
			kept = append(kept, fl.Path)
		}
		out = append(out, fl)
	}
	if !hasDir {
		out = append(out, fatfs.File{Path: path.Dir(SettingsPath), Dir: true})
	}
	out = append(out, fatfs.File{Path: SettingsPath, Size: int64(len(settings)), Content: tree.Bytes(settings)})

	// 3. The new partition, in a temporary file, checked.
	tmp, err := os.CreateTemp("", "edgeimg-personalize-*.fat")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Truncate(part.Size); err != nil {
		return nil, fmt.Errorf("making the new partition: %w", err)
	}
	if err := fatfs.Write(tmp, 0, part.Size, out, fatfs.Options{Label: label, VolumeID: volID, Epoch: epoch}); err != nil {
		return nil, fmt.Errorf("%s: rebuilding partition %d: %w", imagePath, part.Number, err)
	}
	if err := verify(tmp, part.Size, out); err != nil {
		return nil, fmt.Errorf("%s: the rebuilt partition %d: %w", imagePath, part.Number, err)
	}
	if got, err := readFile(tmp, part.Size, SettingsPath); err != nil {
		return nil, fmt.Errorf("the rebuilt partition: %w", err)
	} else if _, err := device.ParseSettings(got); err != nil {
		return nil, fmt.Errorf("the rebuilt partition: %s: %w", SettingsPath, err)
	}

	// 4. Into the image: only what changed.
	n, err := copyChanged(f, part.Start, tmp, part.Size)
	if err != nil {
		return nil, fmt.Errorf("%s: writing partition %d: %w", imagePath, part.Number, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("%s: %w", imagePath, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("%s: %w", imagePath, err)
	}
	return &Result{Partition: part.Number, PartUUID: part.PartUUID, Settings: settings, Kept: kept, BytesWritten: n}, nil
}

// configPartition returns the first FAT partition, which must hold autoboot.txt.
func configPartition(img *inspect.Image) (*inspect.Partition, error) {
	for i := range img.Partitions {
		p := &img.Partitions[i]
		if p.FS != "vfat" {
			continue
		}
		if p.Error != "" {
			return nil, fmt.Errorf("partition %d (the config partition): %s", p.Number, p.Error)
		}
		if _, ok := p.Config["autoboot.txt"]; !ok {
			return nil, fmt.Errorf("partition %d, the first FAT partition, holds no autoboot.txt: not an edgeimg config partition", p.Number)
		}
		if p.Start%sectorSize != 0 || p.Size%sectorSize != 0 {
			return nil, fmt.Errorf("partition %d is not sector aligned", p.Number)
		}
		return p, nil
	}
	return nil, errors.New("no FAT partition")
}

// identity reads the volume label and ID from the FAT32 boot sector at start.
func identity(r io.ReaderAt, start int64) (string, uint32, error) {
	b := make([]byte, sectorSize)
	if _, err := r.ReadAt(b, start); err != nil {
		return "", 0, fmt.Errorf("reading the boot sector: %w", err)
	}
	if string(b[82:87]) != "FAT32" || b[66] != 0x29 {
		return "", 0, errors.New("not FAT32 with an extended boot signature")
	}
	label := strings.TrimRight(string(b[71:82]), " \x00")
	return label, binary.LittleEndian.Uint32(b[67:71]), nil
}

// guard turns a panic of go-diskfs (on corrupt input) into an error.
func guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("corrupt filesystem: %v", r)
		}
	}()
	return fn()
}

// readAll reads every directory and file of the FAT32 filesystem at start into memory.
// go-diskfs v1.9.4 takes io/fs paths for ReadDir ("." for the root) and reads a file to the
// end of its last cluster, so sizes come from the directory entries.
func readAll(r *os.File, start, size int64) ([]fatfs.File, error) {
	var out []fatfs.File
	err := guard(func() error {
		fs, err := fat32.Read(file.New(r, true), size, start, sectorSize)
		if err != nil {
			return err
		}
		total := int64(0)
		var walk func(dir string, depth int) error
		walk = func(dir string, depth int) error {
			if depth > maxDepth {
				return fmt.Errorf("%s: directories nested deeper than %d", dir, maxDepth)
			}
			entries, err := fs.ReadDir(dir)
			if err != nil {
				return err
			}
			for _, e := range entries {
				p := path.Join(dir, e.Name())
				if len(out) >= maxFiles {
					return fmt.Errorf("more than %d files", maxFiles)
				}
				if e.IsDir() {
					out = append(out, fatfs.File{Path: p, Dir: true})
					if err := walk(p, depth+1); err != nil {
						return err
					}
					continue
				}
				info, err := e.Info()
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				if total += info.Size(); info.Size() < 0 || total > maxTotalBytes {
					return fmt.Errorf("more than %d bytes of files", maxTotalBytes)
				}
				b, err := read(fs, p, info.Size())
				if err != nil {
					return err
				}
				out = append(out, fatfs.File{Path: p, Size: int64(len(b)), Content: tree.Bytes(b)})
			}
			return nil
		}
		return walk(".", 0)
	})
	return out, err
}

func read(fs *fat32.FileSystem, p string, size int64) ([]byte, error) {
	fl, err := fs.OpenFile("/"+p, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	defer fl.Close()
	b, err := io.ReadAll(io.LimitReader(fl, size))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if int64(len(b)) != size {
		return nil, fmt.Errorf("%s: %d of %d bytes readable", p, len(b), size)
	}
	return b, nil
}

// readFile reads one file of the filesystem at the start of r.
func readFile(r *os.File, size int64, p string) ([]byte, error) {
	files, err := readAll(r, 0, size)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if strings.EqualFold(f.Path, p) && !f.Dir {
			return []byte(f.Content.(tree.Bytes)), nil
		}
	}
	return nil, fmt.Errorf("%s: %w", p, iofs.ErrNotExist)
}

// verify reads the filesystem at the start of r back and compares it with want.
func verify(r *os.File, size int64, want []fatfs.File) error {
	got, err := readAll(r, 0, size)
	if err != nil {
		return err
	}
	byPath := map[string]fatfs.File{}
	for _, g := range got {
		byPath[strings.ToUpper(g.Path)] = g
	}
	if len(got) != len(want) {
		return fmt.Errorf("holds %d files and directories, want %d", len(got), len(want))
	}
	for _, w := range want {
		g, ok := byPath[strings.ToUpper(w.Path)]
		switch {
		case !ok:
			return fmt.Errorf("%s is missing", w.Path)
		case g.Dir != w.Dir:
			return fmt.Errorf("%s changed between file and directory", w.Path)
		case w.Dir:
		default:
			wb, err := content(w)
			if err != nil {
				return err
			}
			if !bytes.Equal([]byte(g.Content.(tree.Bytes)), wb) {
				return fmt.Errorf("%s differs from what was written", w.Path)
			}
		}
	}
	return nil
}

func content(f fatfs.File) ([]byte, error) {
	if f.Content == nil {
		return nil, nil
	}
	rc, err := f.Content.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// copyChanged writes the size bytes of src over dst at off where they differ, in blocks, so
// an unchanged block (or a hole of a sparse image) is left alone. It returns the bytes written.
func copyChanged(dst *os.File, off int64, src *os.File, size int64) (int64, error) {
	const block = 64 << 10
	a, b := make([]byte, block), make([]byte, block)
	var written int64
	for at := int64(0); at < size; at += block {
		n := min(block, size-at)
		if _, err := src.ReadAt(a[:n], at); err != nil {
			return written, err
		}
		if _, err := dst.ReadAt(b[:n], off+at); err != nil {
			return written, err
		}
		if bytes.Equal(a[:n], b[:n]) {
			continue
		}
		if _, err := dst.WriteAt(a[:n], off+at); err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}
