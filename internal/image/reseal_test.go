package image_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/image/imagetest"
)

// An edited image fails Open until Reseal; then Open and every pages chunk
// check pass, and the sidecar equals the one the dump wrote for the same
// bytes.
func TestReseal(t *testing.T) {
	dir := sample(t)
	orig, err := os.ReadFile(filepath.Join(dir, image.SumsName))
	if err != nil {
		t.Fatal(err)
	}
	if err := image.Reseal(dir); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(dir, image.SumsName))
	if !bytes.Equal(orig, again) {
		t.Errorf("Reseal of an untouched image wrote a different sidecar (%d bytes, was %d)", len(again), len(orig))
	}

	p := filepath.Join(dir, "core-413.img")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := image.Open(dir); !errors.Is(err, image.ErrChecksum) {
		t.Fatalf("Open of an edited image: %v, want ErrChecksum", err)
	}
	if err := image.Reseal(dir); err != nil {
		t.Fatal(err)
	}
	d, err := image.Open(dir)
	if err != nil {
		t.Fatalf("Open after Reseal: %v", err)
	}
	pr, err := d.OpenPages(1)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	got, err := io.ReadAll(pr)
	if err != nil || len(got) == 0 {
		t.Fatalf("pages after Reseal: %v (%d bytes)", err, len(got))
	}
	if got[0] != imagetest.PageByte(412, 0) {
		t.Errorf("page 0 byte %#x, want %#x", got[0], imagetest.PageByte(412, 0))
	}

	os.Remove(filepath.Join(dir, image.InventoryName))
	if err := image.Reseal(dir); !errors.Is(err, image.ErrIncomplete) {
		t.Errorf("Reseal without inventory.img: %v, want ErrIncomplete", err)
	}
}
