package image

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Reseal rewrites the sidecar of dir so that it matches the files there
// now: every *.img of the directory (and every other file the old sidecar
// listed that still exists) is checksummed again, pages files chunk by
// chunk. It is for tools that edit an image on purpose — cryo's tests do,
// as an attacker would. It shows what the sidecar is: a guard against
// accidental damage, which anyone who can write the directory can redo.
// Nothing of an image is trusted for that reason (docs/security.md).
func Reseal(dir string) error {
	listed := map[string]bool{}
	if raw, err := readBounded(filepath.Join(dir, SumsName), maxSumsSize); err == nil {
		if old, err := parseSums(raw); err == nil {
			for n := range old.files {
				listed[n] = true
			}
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reseal %s: %w", dir, err)
	}
	s := &sums{chunk: ChunkSize, files: map[string]*fileSum{}}
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || n == SumsName || (!strings.HasSuffix(n, ".img") && !listed[n]) || checkName(n) != nil {
			continue
		}
		f, err := sumOf(filepath.Join(dir, n), n, isPagesName(n))
		if err != nil {
			return fmt.Errorf("reseal %s: %w", dir, err)
		}
		s.files[n] = f
	}
	if s.files[InventoryName] == nil {
		return fmt.Errorf("reseal %s: %w", dir, &FormatError{File: InventoryName, Offset: -1, Err: fmt.Errorf("missing: %w", ErrIncomplete)})
	}
	return os.WriteFile(filepath.Join(dir, SumsName), s.marshal(), fileMode)
}

func isPagesName(n string) bool {
	var id uint32
	_, err := fmt.Sscanf(n, "pages-%d.img", &id)
	return err == nil && PagesName(id) == n
}

// sumOf checksums the file at p as the writers do: whole, or in chunks.
func sumOf(p, name string, chunked bool) (*fileSum, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := &fileSum{name: name}
	buf := make([]byte, ChunkSize)
	whole := crc32.New(castagnoli)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			s.size += uint64(n)
			if chunked {
				s.chunks = append(s.chunks, ChunkSum(buf[:n]))
			} else {
				whole.Write(buf[:n])
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if chunked {
		if s.chunks == nil {
			s.chunks = []uint32{}
		}
	} else {
		s.crc = whole.Sum32()
	}
	return s, nil
}
