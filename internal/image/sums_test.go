package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/cryo-project/cryo/internal/errs"
)

// writeSmall commits a tiny image with a pages file and returns the
// sidecar's bytes.
func writeSmall(t testing.TB, pages int) []byte {
	dir := filepath.Join(t.TempDir(), "img")
	d, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := d.CreatePages(1)
	pw.Write(bytes.Repeat([]byte{7}, pages))
	pw.Close()
	w, _ := d.Create("inventory.img", "INVENTORY")
	v := uint32(2)
	w.Write(&inventory.InventoryEntry{ImgVersion: &v})
	w.Close()
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, SumsName))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSumsRoundTrip(t *testing.T) {
	b := writeSmall(t, 3*ChunkSize+1)
	s, err := parseSums(b)
	if err != nil {
		t.Fatal(err)
	}
	p := s.files["pages-1.img"]
	if p == nil || p.size != 3*ChunkSize+1 || len(p.chunks) != 4 || s.files[InventoryName] == nil || len(s.files) != 2 {
		t.Fatalf("parsed %+v", s.files)
	}
	if !bytes.Equal(s.marshal(), b) {
		t.Error("marshal(parse(b)) != b")
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x40
		if _, err := parseSums(c); !errors.Is(err, ErrImageCorrupt) {
			t.Fatalf("flip at %d accepted: %v", i, err)
		}
	}
	for n := range len(b) {
		if _, err := parseSums(b[:n]); !errors.Is(err, ErrImageCorrupt) {
			t.Fatalf("cut at %d accepted: %v", n, err)
		}
	}
}

// TestSumsVersion: a sidecar of another version that is intact is refused
// as not supported (another cryo wrote it), not as corrupt; one whose
// trailer does not match is corrupt, whatever its version says.
func TestSumsVersion(t *testing.T) {
	b := writeSmall(t, 10)
	c := bytes.Clone(b)
	binary.LittleEndian.PutUint32(c[8:], sumsVersion+1)
	binary.LittleEndian.PutUint32(c[len(c)-4:], crc32.Checksum(c[:len(c)-4], castagnoli))
	_, err := parseSums(c)
	var fe *FormatError
	if !errors.Is(err, errs.ErrNotSupported) || errors.Is(err, ErrImageCorrupt) || !errors.As(err, &fe) || fe.Offset != 8 {
		t.Errorf("intact sidecar of version %d: %v, want ErrNotSupported at byte 8", sumsVersion+1, err)
	}
	binary.LittleEndian.PutUint32(c[len(c)-4:], ^binary.LittleEndian.Uint32(c[len(c)-4:]))
	if _, err := parseSums(c); !errors.Is(err, ErrImageCorrupt) || errors.Is(err, errs.ErrNotSupported) {
		t.Errorf("damaged sidecar of version %d: %v, want ErrImageCorrupt", sumsVersion+1, err)
	}
}

// TestSumsHugeCounts: counts that promise more than the bytes hold are
// refused before anything is allocated from them.
func TestSumsHugeCounts(t *testing.T) {
	b := writeSmall(t, 10)
	for _, tc := range []struct {
		name string
		edit func([]byte)
	}{
		{"record count", func(c []byte) { c[16], c[17], c[18], c[19] = 0xff, 0xff, 0xff, 0xff }},
		{"pages size", func(c []byte) {
			i := bytes.Index(c, []byte("pages-1.img")) + len("pages-1.img") + 1
			for j := range 8 {
				c[i+j] = 0xff
			}
		}},
	} {
		c := bytes.Clone(b)
		tc.edit(c)
		// Fix the trailer so only the bound can refuse it.
		body := c[:len(c)-4]
		crc := crc32.Checksum(body, castagnoli)
		c[len(c)-4], c[len(c)-3], c[len(c)-2], c[len(c)-1] = byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24)
		allocs := testing.AllocsPerRun(1, func() { parseSums(c) })
		_, err := parseSums(c)
		if !errors.Is(err, ErrImageCorrupt) || allocs > 20 {
			t.Errorf("%s: %v after %v allocs", tc.name, err, allocs)
		}
	}
}

func FuzzChecksums(f *testing.F) {
	f.Add(writeSmall(f, 0))
	f.Add(writeSmall(f, 5000))
	f.Add(writeSmall(f, 2*ChunkSize+3))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseSums(b)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrImageCorrupt) || fe.File != SumsName || fe.Offset > int64(len(b)) {
				t.Fatalf("error %v is not a FormatError within %d bytes", err, len(b))
			}
			return
		}
		// Whatever parses must encode back to the same bytes: the format
		// has one encoding per content.
		if !bytes.Equal(s.marshal(), b) {
			t.Fatalf("re-encoding differs")
		}
	})
}
