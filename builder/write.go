package builder

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/edgeimg/edgeimg/builder/base"
	"github.com/edgeimg/edgeimg/builder/ext4img"
	"github.com/edgeimg/edgeimg/builder/fatfs"
	"github.com/edgeimg/edgeimg/builder/fetch"
	"github.com/edgeimg/edgeimg/builder/spec"
	"github.com/edgeimg/edgeimg/builder/tree"
	"github.com/edgeimg/edgeimg/hw"
)

// readRoot reads the base's root filesystem through the cache: the first build of a base
// reads the ext4 and stores it as a tar; later builds index that tar in well under a second.
func readRoot(ctx context.Context, img *base.Image, src *baseSource, o *options) (*tree.Tree, error) {
	dir := o.cacheDir
	if dir == "" {
		var err error
		if dir, err = fetch.DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	return img.RootFSCached(ctx, dir, src.RawSHA256)
}

// PartitionInfo describes one partition of the written image.
type PartitionInfo struct {
	Number   int     `json:"number"`
	Role     hw.Role `json:"role"`
	Type     string  `json:"type"`
	Start    int64   `json:"start"`
	Size     int64   `json:"size"`
	FS       string  `json:"fs,omitempty"`
	Label    string  `json:"label,omitempty"`
	UUID     string  `json:"uuid,omitempty"`
	PartUUID string  `json:"partuuid"`
	// Used is the number of bytes the filesystem occupies (ext4) or its content (FAT).
	Used int64 `json:"used,omitempty"`
	// SHA256 is the hash of the partition's bytes for the system slot, which updates replace
	// exactly as built.
	SHA256 string `json:"sha256,omitempty"`
}

type diskResult struct {
	Size       int64
	Partitions []PartitionInfo
	Skipped    []string
	SHA256     string // of the whole image, hashed while it was written
}

func writeDisk(ctx context.Context, path string, lay *layout, fats map[hw.Role]*tree.Tree, root *tree.Tree, s *spec.Spec, epoch time.Time, o *options) (*diskResult, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("disk image: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(lay.Table.Size); err != nil {
		return nil, fmt.Errorf("disk image: %w", err)
	}
	if err := lay.Table.Write(f); err != nil {
		return nil, fmt.Errorf("partition table: %w", err)
	}
	// The partitions are written in order, each within its own bounds: once one is written,
	// the image is final up to its end and hashed while the next one is written.
	hasher, err := newImageHasher(path, lay.Table.Size)
	if err != nil {
		return nil, err
	}
	hashing := true
	defer func() {
		if hashing {
			hasher.abort()
		}
	}()
	res := &diskResult{Size: lay.Table.Size}
	partSums := map[int]func() string{} // index in res.Partitions: its sha256 once hashed
	// final is where the first partition not yet written starts: bytes before it are final.
	final := func(from int) int64 {
		end := lay.Table.Size
		for _, q := range lay.Parts[from:] {
			end = min(end, lay.Table.Part(q.Number).Start)
		}
		return end
	}
	for i, p := range lay.Parts {
		pl := lay.Table.Part(p.Number)
		hasher.advance(final(i))
		info := PartitionInfo{Number: p.Number, Role: p.Role, Type: fmt.Sprintf("0x%02x", p.Type),
			Start: pl.Start, Size: pl.Size, FS: p.FS, PartUUID: lay.partUUID(p.Role)}
		switch p.FS {
		case hw.FSVFAT:
			t := fats[p.Role]
			id := derive(4, "edgeimg", "vfat", s.Name, lay.part(p.Role).Label)
			volID := uint32(id[0])<<24 | uint32(id[1])<<16 | uint32(id[2])<<8 | uint32(id[3])
			used, err := writeFAT(f, pl.Start, pl.Size, t, p.Label, volID, epoch, o)
			if err != nil {
				return nil, fmt.Errorf("partition %d (%s): %w", p.Number, p.Role, err)
			}
			info.Label, info.UUID, info.Used = p.Label, fmt.Sprintf("%04X-%04X", volID>>16, volID&0xffff), used
		case hw.FSExt4:
			get, err := hasher.sum(pl.Start, pl.Size)
			if err != nil {
				return nil, err
			}
			partSums[len(res.Partitions)] = get
			var uuid [16]byte
			copy(uuid[:], derive(16, "edgeimg", "ext4", s.Name, s.Board, s.Version, string(p.Role)))
			uuid[6] = uuid[6]&0x0f | 0x40 // RFC 4122 version 4 layout, derived not random
			uuid[8] = uuid[8]&0x3f | 0x80
			total := countBytes(root)
			o.progress.Start(fmt.Sprintf("writing %s", p.Role), total)
			counted := withProgress(root, o.progress)
			ei, err := ext4img.Write(ctx, counted, f, pl.Start, pl.Size, ext4img.Options{
				Partition: fmt.Sprintf("partition %d (%s, layout.systemSize)", p.Number, p.Role),
				UUID:      uuid, Label: p.Label, Epoch: epoch})
			o.progress.Done()
			if err != nil {
				return nil, err
			}
			info.Label, info.UUID, info.Used = p.Label, formatUUID(uuid), ei.Size
			res.Skipped = ei.Skipped
		}
		res.Partitions = append(res.Partitions, info)
		hasher.advance(final(i + 1))
	}
	// Writing back to disk and hashing the rest of the image run side by side.
	synced := make(chan error, 1)
	go func() { synced <- f.Sync() }()
	hashing = false
	sum, herr := hasher.finish()
	if err := <-synced; err != nil {
		return nil, fmt.Errorf("disk image: %w", err)
	}
	if herr != nil {
		return nil, herr
	}
	res.SHA256 = sum
	for i, get := range partSums {
		res.Partitions[i].SHA256 = get()
	}
	return res, f.Close()
}

func writeFAT(f *os.File, off, size int64, t *tree.Tree, label string, volID uint32, epoch time.Time, o *options) (int64, error) {
	var files []fatfs.File
	var used int64
	err := t.Walk(func(e *tree.Entry) error {
		switch e.Kind {
		case tree.Dir:
			files = append(files, fatfs.File{Path: e.Path, Dir: true})
		case tree.Regular:
			files = append(files, fatfs.File{Path: e.Path, Size: e.Size, Content: e.Content})
			used += e.Size
		default:
			return fmt.Errorf("%s: a %s cannot be stored on FAT", e.Path, e.Kind)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return used, fatfs.Write(f, off, size, files, fatfs.Options{Label: label, VolumeID: volID, Epoch: epoch})
}

func countBytes(t *tree.Tree) int64 {
	var n int64
	_ = t.Walk(func(e *tree.Entry) error {
		if e.Kind == tree.Regular {
			n += e.Size
		}
		return nil
	})
	return n
}

// withProgress returns a shallow copy of t whose file contents report bytes read to p.
func withProgress(t *tree.Tree, p Progress) *tree.Tree {
	if _, ok := p.(nopProgress); ok {
		return t
	}
	out := tree.New()
	_ = t.Walk(func(e *tree.Entry) error {
		c := *e
		if c.Kind == tree.Regular && c.Content != nil {
			inner := c.Content
			c.Content = tree.Func(func() (io.ReadCloser, error) {
				rc, err := inner.Open()
				if err != nil {
					return nil, err
				}
				return progressReader{rc, p}, nil
			})
		}
		return out.Put(&c)
	})
	return out
}

type progressReader struct {
	io.ReadCloser
	p Progress
}

func (r progressReader) Read(b []byte) (int, error) {
	n, err := r.ReadCloser.Read(b)
	r.p.Add(int64(n))
	return n, err
}

func formatUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
