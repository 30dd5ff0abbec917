package tree

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"sort"
	"time"
)

// TarOptions adjust WriteTarContext.
type TarOptions struct {
	// KeepSockets stores sockets as FIFO headers carrying the PAX record SocketPAXKey (FromTar
	// reads them back as sockets) instead of skipping them.
	KeepSockets bool
}

// WriteTar writes the tree as a tar stream in Walk order, skipping sockets. See
// WriteTarContext.
func (t *Tree) WriteTar(w io.Writer) (skipped []string, err error) {
	return t.WriteTarContext(context.Background(), w, TarOptions{})
}

// WriteTarContext writes the tree as a tar stream in Walk order. Extended attributes become
// SCHILY.xattr PAX records; every time field is the entry's mtime, so the stream (and any
// filesystem made from it) depends only on the tree. Sockets cannot be expressed in plain tar:
// they are skipped, and skipped reports their paths, unless o.KeepSockets. ctx is checked
// between entries.
func (t *Tree) WriteTarContext(ctx context.Context, w io.Writer, o TarOptions) (skipped []string, err error) {
	tw := tar.NewWriter(w)
	buf := make([]byte, 1<<20)
	n := 0
	err = t.Walk(func(e *Entry) error {
		if n++; n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		hdr := &tar.Header{
			Name:       e.Path,
			Mode:       int64(e.Mode),
			Uid:        int(e.UID),
			Gid:        int(e.GID),
			ModTime:    e.ModTime,
			AccessTime: e.ModTime,
			ChangeTime: e.ModTime,
			Format:     tar.FormatPAX,
		}
		switch e.Kind {
		case Regular:
			hdr.Typeflag, hdr.Size = tar.TypeReg, e.Size
		case Dir:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case Symlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.Linkname
		case Hardlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, e.Linkname
		case CharDev:
			hdr.Typeflag, hdr.Devmajor, hdr.Devminor = tar.TypeChar, int64(e.Devmajor), int64(e.Devminor)
		case BlockDev:
			hdr.Typeflag, hdr.Devmajor, hdr.Devminor = tar.TypeBlock, int64(e.Devmajor), int64(e.Devminor)
		case FIFO:
			hdr.Typeflag = tar.TypeFifo
		case Socket:
			if !o.KeepSockets {
				skipped = append(skipped, e.Path)
				return nil
			}
			hdr.Typeflag = tar.TypeFifo
			hdr.PAXRecords = map[string]string{SocketPAXKey: "1"}
		default:
			return fmt.Errorf("%s: cannot store a %s", e.Path, e.Kind)
		}
		if len(e.Xattrs) > 0 {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = make(map[string]string, len(e.Xattrs))
			}
			keys := make([]string, 0, len(e.Xattrs))
			for k := range e.Xattrs {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				hdr.PAXRecords["SCHILY.xattr."+k] = string(e.Xattrs[k])
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("tar header for %s: %w", e.Path, err)
		}
		if e.Kind != Regular || e.Size == 0 {
			return nil
		}
		rc, err := e.Content.Open()
		if err != nil {
			return fmt.Errorf("opening %s: %w", e.Path, err)
		}
		m, err := io.CopyBuffer(tw, io.LimitReader(rc, e.Size), buf)
		rc.Close()
		if err != nil {
			return fmt.Errorf("copying %s: %w", e.Path, err)
		}
		if m != e.Size {
			return fmt.Errorf("copying %s: content has %d bytes, entry says %d", e.Path, m, e.Size)
		}
		return nil
	})
	if err != nil {
		return skipped, err
	}
	return skipped, tw.Close()
}

// Epoch is a convenience for tests and generators: the Unix time s in UTC.
func Epoch(s int64) time.Time { return time.Unix(s, 0).UTC() }
