package personalize

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeimg/edgeimg/agent/device"
	"github.com/edgeimg/edgeimg/builder"
	"github.com/edgeimg/edgeimg/builder/inspect"
	"github.com/edgeimg/edgeimg/builder/spec"
	_ "github.com/edgeimg/edgeimg/hw/rpi4"
	"github.com/edgeimg/edgeimg/internal/basegen"
	"github.com/edgeimg/edgeimg/internal/testutil"
)

// fixture is a base image (not made by edgeimg) and an image built from it.
var fixture struct {
	once        sync.Once
	dir         string
	base, image string
	err         error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.dir != "" {
		os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

func setup(t *testing.T) (base, image string) {
	t.Helper()
	for _, tool := range []string{"mke2fs", "mkfs.vfat", "sfdisk", "mcopy"} {
		testutil.NeedTool(t, tool)
	}
	fixture.once.Do(func() {
		if fixture.dir, fixture.err = os.MkdirTemp("", "edgeimg-personalize-test-"); fixture.err != nil {
			return
		}
		d := fixture.dir
		fixture.base = filepath.Join(d, "base.img")
		if fixture.err = basegen.Generate(context.Background(), fixture.base, basegen.Options{Small: true, Seed: 11}); fixture.err != nil {
			return
		}
		agent := filepath.Join(d, "edgeimg-agent")
		if fixture.err = os.WriteFile(agent, []byte("#!/bin/sh\n"), 0o755); fixture.err != nil {
			return
		}
		s, err := spec.Decode(strings.NewReader(fmt.Sprintf("name: pz\nboard: rpi4\nbase: {image: %s}\nlayout: {bootSize: 64MiB, systemSize: 256MiB, dataMinSize: 64MiB}\noutput: {dir: %s, compress: none}\n", fixture.base, filepath.Join(d, "out"))), "pz.yaml")
		if err != nil {
			fixture.err = err
			return
		}
		s.SetDefaults(spec.Defaults{})
		if fixture.err = s.Validate(); fixture.err != nil {
			return
		}
		res, err := builder.Build(context.Background(), s, builder.WithAgent(agent), builder.WithCacheDir(filepath.Join(d, "cache")), builder.WithEpoch(time.Unix(1700000000, 0)))
		if err != nil {
			fixture.err = err
			return
		}
		fixture.image = res.Image
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	return fixture.base, fixture.image
}

func sum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// partition1 copies the config partition of img into a file for mtools and fsck.vfat.
func partition1(t *testing.T, img string) string {
	t.Helper()
	i, err := inspect.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	p := i.Partitions[0]
	in, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out := filepath.Join(t.TempDir(), "p1")
	b := make([]byte, p.Size)
	if _, err := in.ReadAt(b, p.Start); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func mtype(t *testing.T, part, name string) string {
	t.Helper()
	out, err := exec.Command(testutil.NeedTool(t, "mtype"), "-i", part, "::/"+name).Output()
	if err != nil {
		t.Fatalf("mtype %s: %v", name, err)
	}
	return string(out)
}

var good = &device.Settings{
	Token:    "edg_0123456789abcdef",
	Hostname: "truck-42",
	Labels:   map[string]string{"site": "berlin", "truck": "42"},
	WiFi:     &device.WiFi{SSID: "depot wifi", PSK: "correct horse battery", Country: "DE"},
	Network:  &device.Network{Address: "192.168.10.20/24", Gateway: "192.168.10.1", DNS: []string{"192.168.10.1", "9.9.9.9"}},
}

// TestBadInput runs first: every refusal leaves the image as it was.
func TestBadInput(t *testing.T) {
	base, img := setup(t)
	before, baseBefore := sum(t, img), sum(t, base)
	for _, c := range []struct {
		name  string
		image string
		s     *device.Settings
		want  string
	}{
		{"bad hostname", img, &device.Settings{Hostname: "Truck_42"}, "hostname"},
		{"psk too short", img, &device.Settings{WiFi: &device.WiFi{SSID: "depot", PSK: "short"}}, "wifi.psk"},
		{"bad country", img, &device.Settings{WiFi: &device.WiFi{SSID: "depot", Country: "Germany"}}, "wifi.country"},
		{"bad address", img, &device.Settings{Network: &device.Network{Address: "192.168.10.20"}}, "network.address"},
		{"not an edgeimg image", base, good, "was not made by edgeimg"},
		{"missing image", filepath.Join(t.TempDir(), "nope.img"), good, "no such file"},
		{"compressed image", writeFile(t, "x.img.zst", "\x28\xb5\x2f\xfdjunk"), good, "personalize the raw .img"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Personalize(c.image, c.s)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error about %q", err, c.want)
			}
		})
	}
	if sum(t, img) != before || sum(t, base) != baseBefore {
		t.Fatal("a refused personalize changed an image")
	}
}

func writeFile(t *testing.T, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPersonalize(t *testing.T) {
	testutil.NeedTool(t, "fsck.vfat")
	_, img := setup(t)
	before := partition1(t, img)
	autoboot := mtype(t, before, "autoboot.txt")
	imgBefore, err := inspect.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}

	res, err := Personalize(img, good)
	if err != nil {
		t.Fatal(err)
	}
	if res.Partition != 1 || strings.Join(res.Kept, ",") != "autoboot.txt" || res.BytesWritten == 0 || res.BytesWritten > 1<<20 {
		t.Errorf("result %+v", res)
	}
	after := partition1(t, img)
	testutil.Run(t, "fsck.vfat", "-n", after)
	if got := mtype(t, after, "autoboot.txt"); got != autoboot {
		t.Errorf("autoboot.txt changed:\n%q\n%q", got, autoboot)
	}
	yml := mtype(t, after, "edgeimg/device.yaml")
	s, err := device.ParseSettings([]byte(yml)) // as the agent reads it
	if err != nil {
		t.Fatalf("%v:\n%s", err, yml)
	}
	if s.Token != good.Token || s.Hostname != "truck-42" || s.Labels["truck"] != "42" || s.WiFi.Country != "DE" || s.Network.DNS[1] != "9.9.9.9" {
		t.Errorf("device.yaml:\n%s", yml)
	}
	// The agent's import from the mounted partition (here: mcopy'd out of it).
	card := t.TempDir()
	testutil.Run(t, "mcopy", "-s", "-i", after, "::/edgeimg", card)
	p := device.Paths{Root: t.TempDir()}
	imported, err := device.Import(p, card)
	if err != nil || imported.Hostname != "truck-42" || imported.WiFi.PSK != good.WiFi.PSK {
		t.Fatalf("import: %+v %v", imported, err)
	}

	// The rest of the image is as it was: the label, volume ID and every other partition.
	imgAfter, err := inspect.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	if !imgAfter.Edgeimg || imgAfter.Partitions[0].Label != "EDGECONFIG" || imgAfter.Partitions[0].Config["edgeimg/device.yaml"] == "" {
		t.Errorf("after: %+v", imgAfter.Partitions[0])
	}
	if a, b := volumeID(t, before), volumeID(t, after); a != b || a == "" {
		t.Errorf("volume ID %q became %q", a, b)
	}
	for i := 1; i < len(imgBefore.Partitions); i++ {
		if fmt.Sprint(imgBefore.Partitions[i]) != fmt.Sprint(imgAfter.Partitions[i]) {
			t.Errorf("partition %d changed:\n%+v\n%+v", i+1, imgBefore.Partitions[i], imgAfter.Partitions[i])
		}
	}

	// Again with the same settings: nothing to write, the same bytes.
	sumAfter := sum(t, img)
	res, err = Personalize(img, good)
	if err != nil {
		t.Fatal(err)
	}
	if res.BytesWritten != 0 || sum(t, img) != sumAfter {
		t.Errorf("personalizing again wrote %d bytes", res.BytesWritten)
	}
	// New settings replace the old ones.
	if _, err := Personalize(img, &device.Settings{Hostname: "truck-43"}); err != nil {
		t.Fatal(err)
	}
	final := partition1(t, img)
	testutil.Run(t, "fsck.vfat", "-n", final)
	if y := mtype(t, final, "edgeimg/device.yaml"); strings.Contains(y, "token:") || !strings.Contains(y, "hostname: truck-43") {
		t.Errorf("device.yaml:\n%s", y)
	}
	if mtype(t, final, "autoboot.txt") != autoboot {
		t.Error("autoboot.txt changed")
	}
}

// volumeID returns the FAT volume serial number of a partition file, as minfo shows it.
func volumeID(t *testing.T, part string) string {
	for _, l := range strings.Split(testutil.Run(t, "minfo", "-i", part, "::"), "\n") {
		if v, ok := strings.CutPrefix(l, "serial number: "); ok {
			return v
		}
	}
	return ""
}
