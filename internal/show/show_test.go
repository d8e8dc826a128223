package show

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/image/imagetest"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func TestGolden(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	imagetest.Write(t, dir)
	img, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	img.Dir = "IMAGE" // the temporary path differs on each run
	for _, tc := range []struct {
		file  string
		write func(*bytes.Buffer) error
	}{
		{"sample.txt", func(b *bytes.Buffer) error { return WriteText(b, img) }},
		{"sample.json", func(b *bytes.Buffer) error { return WriteJSON(b, img) }},
	} {
		var b bytes.Buffer
		if err := tc.write(&b); err != nil {
			t.Fatal(err)
		}
		golden := filepath.Join("testdata", tc.file)
		if *update {
			if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Bytes(), want) {
			t.Errorf("%s differs (run go test -update and review the diff):\n%s", tc.file, b.Bytes())
		}
	}
}

// TestCorruptRefused: show reads through image.Open, so a damaged image
// is reported, not described.
func TestCorruptRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	imagetest.Write(t, dir)
	p := filepath.Join(dir, "mm-412.img")
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 1
	os.WriteFile(p, b, 0o600)
	if _, err := Load(dir); !errors.Is(err, image.ErrChecksum) {
		t.Errorf("Load of a damaged image: %v, want ErrChecksum", err)
	}
}

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		b    uint64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {4096, "4.0 KiB"}, {1 << 20, "1.0 MiB"},
		{1288490189, "1.2 GiB"}, {^uint64(0), "16384.0 PiB"},
	} {
		if got := Size(tc.b); got != tc.want {
			t.Errorf("Size(%d) = %q, want %q", tc.b, got, tc.want)
		}
	}
}
