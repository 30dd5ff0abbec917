package inspect_test

import (
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeimg/edgeimg/builder/inspect"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

// fuzzDiskSize is the size every fuzz input is extended to (sparsely), so that a seed holds
// only the start of a disk: the partition table and the filesystems' metadata.
const fuzzDiskSize = 40 << 20

// smallDisk returns the first 640 KiB of a disk with an MBR and, from sector 64, a 33 MiB
// FAT32 filesystem (about the smallest there is; go-diskfs needs two FATs) holding a
// config.txt, made with mkfs.vfat and mcopy: a fuzz seed that reaches go-diskfs's FAT32 reader.
func smallDisk(t testing.TB) []byte {
	dir := t.TempDir()
	fat := filepath.Join(dir, "fat")
	if err := os.WriteFile(fat, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(fat, 33<<20); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "mkfs.vfat", "-F", "32", "-s", "1", "-n", "SEED", fat)
	cfg := filepath.Join(dir, "config.txt")
	if err := os.WriteFile(cfg, []byte("arm_64bit=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "mcopy", "-i", fat, cfg, "::config.txt")
	b, err := os.ReadFile(fat)
	if err != nil {
		t.Fatal(err)
	}
	disk := make([]byte, 640<<10)
	copy(disk[64*512:], b)
	binary.LittleEndian.PutUint32(disk[0x1B8:], 0xdeadbeef)
	e := disk[0x1BE:]
	e[4] = 0x0c
	binary.LittleEndian.PutUint32(e[8:], 64)
	binary.LittleEndian.PutUint32(e[12:], 33<<20/512)
	disk[510], disk[511] = 0x55, 0xaa
	return disk
}

// smallGPT returns the first 64 KiB of a 4 MiB GPT disk made by sfdisk.
func smallGPT(t testing.TB) []byte {
	p := filepath.Join(t.TempDir(), "gpt")
	if err := os.WriteFile(p, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	c := exec.Command(testutil.NeedTool(t, "sfdisk"), "-q", p)
	c.Stdin = strings.NewReader("label: gpt\nstart=2048, size=2048, name=one\n")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 64<<10)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFuzz writes data as a disk of fuzzDiskSize bytes.
func writeFuzz(t *testing.T, p string, data []byte) {
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 && len(data) < fuzzDiskSize {
		if err := os.Truncate(p, fuzzDiskSize); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzInspect feeds Inspect arbitrary files: it returns an error or an image whose text and
// JSON can be written, and never panics or hangs. The seeds are large (a FAT32 needs 33 MiB,
// its metadata 600 KiB): fuzz with -fuzzminimizetime 0, or minimizing stalls the fuzzer.
func FuzzInspect(f *testing.F) {
	testutil.NeedTool(f, "mkfs.vfat")
	testutil.NeedTool(f, "mcopy")
	disk := smallDisk(f)
	f.Add(disk)
	f.Add(disk[:4096])
	f.Add(smallGPT(f))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4<<20 {
			return
		}
		p := filepath.Join(dir, "fuzz.img")
		writeFuzz(t, p, data)
		img, err := inspect.Inspect(p)
		if err != nil {
			if !strings.HasPrefix(err.Error(), p+": ") {
				t.Errorf("error %q does not name the file", err)
			}
			return
		}
		if err := img.Text(io.Discard); err != nil {
			t.Error(err)
		}
		if _, err := json.Marshal(img); err != nil {
			t.Error(err)
		}
	})
}

// TestFuzzSeedsParse checks that the seeds reach the filesystem code rather than stopping at
// the partition table.
func TestFuzzSeedsParse(t *testing.T) {
	testutil.NeedTool(t, "mkfs.vfat")
	testutil.NeedTool(t, "mcopy")
	p := filepath.Join(t.TempDir(), "seed.img")
	writeFuzz(t, p, smallDisk(t))
	img, err := inspect.Inspect(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Partitions) != 1 || img.Partitions[0].FS != "vfat" || img.Partitions[0].Label != "SEED" {
		t.Errorf("seed disk: %+v", img.Partitions)
	}
	if img.Partitions[0].Config["config.txt"] != "arm_64bit=1" {
		t.Errorf("seed disk: config %v", img.Partitions[0].Config)
	}
}
