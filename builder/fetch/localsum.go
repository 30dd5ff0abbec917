package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
)

// localSum is what the cache remembers of a local file it hashed: the file's identity and
// change times, and its sha256. A later build whose file has the same identity, size and
// times reuses the sum instead of reading gigabytes again (as git's index does).
type localSum struct {
	Path   string `json:"path"`
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"ino"`
	Size   int64  `json:"size"`
	Mtime  int64  `json:"mtimeNs"`
	Ctime  int64  `json:"ctimeNs"`
	SHA256 string `json:"sha256"`
}

func statKey(path string) (localSum, bool) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return localSum{}, false
	}
	fi, err := os.Stat(abs)
	if err != nil || !fi.Mode().IsRegular() {
		return localSum{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return localSum{}, false
	}
	return localSum{Path: abs, Dev: uint64(st.Dev), Ino: uint64(st.Ino), Size: fi.Size(),
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}, true
}

func (c *Cache) localSumPath(abs string) string {
	h := sha256.Sum256([]byte(abs))
	return filepath.Join(c.Dir, "localsums", hex.EncodeToString(h[:16])+".json")
}

// hashLocal returns the sha256 of a local file, from the cache's memory of it when the file
// is unchanged.
func (c *Cache) hashLocal(ctx context.Context, path string, o *options) (string, error) {
	key, ok := statKey(path)
	if ok && c.Dir != "" {
		if b, err := os.ReadFile(c.localSumPath(key.Path)); err == nil {
			var m localSum
			if json.Unmarshal(b, &m) == nil && m.SHA256 != "" {
				want := key
				want.SHA256 = m.SHA256
				if m == want {
					return m.SHA256, nil
				}
			}
		}
	}
	sum, err := hashFile(ctx, path, o)
	if err != nil || !ok || c.Dir == "" {
		return sum, err
	}
	// Remember it only if the file did not change while it was read.
	if after, ok := statKey(path); ok && after == key {
		key.SHA256 = sum
		if b, err := json.Marshal(key); err == nil {
			p := c.localSumPath(key.Path)
			if os.MkdirAll(filepath.Dir(p), 0o755) == nil {
				if tmp, err := os.CreateTemp(filepath.Dir(p), ".localsum-*"); err == nil {
					_, werr := tmp.Write(b)
					cerr := tmp.Close()
					if werr != nil || cerr != nil || os.Rename(tmp.Name(), p) != nil {
						os.Remove(tmp.Name())
					}
				}
			}
		}
	}
	return sum, nil
}
