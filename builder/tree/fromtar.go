package tree

import (
	"archive/tar"
	"fmt"
	"io"
	"strings"
)

// SocketPAXKey marks a tar entry as a Unix socket, which tar itself cannot express: an entry
// of type FIFO carrying the PAX record SocketPAXKey=1 is read by FromTar as a Socket. (Sockets
// matter only to reproduce a base filesystem exactly; WriteTar skips them.)
const SocketPAXKey = "EDGEIMG.socket"

// FromTar indexes the tar archive held in the first size bytes of r into a tree without
// reading any file content: each regular file's Content is a Section of r, so r must stay
// readable for as long as the tree is used. Headers are read and file data skipped by
// seeking, which makes indexing fast even for large archives. PAX SCHILY.xattr records become
// Xattrs, hard links become Hardlink entries, SocketPAXKey marks sockets. Sparse entries are
// rejected (their data is not stored contiguously). The archive's root directory ("./") is
// ignored: a tree has no entry for its root.
func FromTar(r io.ReaderAt, size int64) (*Tree, error) {
	sr := io.NewSectionReader(r, 0, size)
	tr := tar.NewReader(sr)
	t := New()
	var links []*Entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("tar: %w", err)
		}
		off, err := sr.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, fmt.Errorf("tar: %w", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name := Clean(hdr.Name)
		if name == "" {
			continue
		}
		if hdr.Mode < 0 || hdr.Mode&^0o177777 != 0 {
			return nil, fmt.Errorf("tar: %s: mode %o", hdr.Name, hdr.Mode)
		}
		if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) > 1<<32-1 || int64(hdr.Gid) > 1<<32-1 {
			return nil, fmt.Errorf("tar: %s: uid %d gid %d out of range", hdr.Name, hdr.Uid, hdr.Gid)
		}
		e := &Entry{
			Path:    name,
			Mode:    uint32(hdr.Mode) & 07777,
			UID:     uint32(hdr.Uid),
			GID:     uint32(hdr.Gid),
			ModTime: hdr.ModTime.UTC(),
		}
		for k, v := range hdr.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				return nil, fmt.Errorf("tar: %s: sparse entries are not supported", hdr.Name)
			}
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.Xattrs == nil {
					e.Xattrs = map[string][]byte{}
				}
				e.Xattrs[x] = []byte(v)
			}
		}
		switch hdr.Typeflag {
		case tar.TypeReg: // the reader reports old-style TypeRegA entries as TypeReg
			if hdr.Size < 0 || off > size || hdr.Size > size-off {
				return nil, fmt.Errorf("tar: %s: %d bytes of data at offset %d run past the end of the archive (%d bytes)",
					hdr.Name, hdr.Size, off, size)
			}
			e.Kind, e.Size = Regular, hdr.Size
			e.Content = Section{R: r, Offset: off, Size: hdr.Size}
		case tar.TypeDir:
			e.Kind = Dir
		case tar.TypeSymlink:
			e.Kind, e.Linkname = Symlink, hdr.Linkname
		case tar.TypeLink:
			e.Kind, e.Linkname = Hardlink, Clean(hdr.Linkname)
			links = append(links, e)
			continue
		case tar.TypeChar, tar.TypeBlock:
			if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > 1<<32-1 || hdr.Devminor > 1<<32-1 {
				return nil, fmt.Errorf("tar: %s: device %d,%d out of range", hdr.Name, hdr.Devmajor, hdr.Devminor)
			}
			e.Kind = CharDev
			if hdr.Typeflag == tar.TypeBlock {
				e.Kind = BlockDev
			}
			e.Devmajor, e.Devminor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
		case tar.TypeFifo:
			e.Kind = FIFO
			if hdr.PAXRecords[SocketPAXKey] == "1" {
				e.Kind = Socket
			}
		case tar.TypeGNUSparse:
			return nil, fmt.Errorf("tar: %s: sparse entries are not supported", hdr.Name)
		default:
			return nil, fmt.Errorf("tar: %s: unsupported entry type %q", hdr.Name, hdr.Typeflag)
		}
		if err := t.Put(e); err != nil {
			return nil, err
		}
	}
	// Links go last so that their targets exist whatever order the archive used.
	for _, e := range links {
		if err := t.Put(e); err != nil {
			return nil, err
		}
	}
	return t, nil
}
