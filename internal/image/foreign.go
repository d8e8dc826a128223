package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// An image CRIU wrote has no sidecar. cryo tells it from a dump of its own
// that did not commit by what cryo always leaves: a dump of cryo writes its
// files named cryo-* before inventory.img and renames inventory.img into
// place only after the sidecar is on disk, so a directory with inventory.img,
// no sidecar and no cryo-* file is another tool's complete image (CRIU too
// writes inventory.img last). Anything else without a sidecar is still
// refused as incomplete.
//
// Such an image gets no more trust than one of cryo's: Open checksums every
// file as it finds it, exactly as Reseal would, so that what restore parses
// later is what was there at Open (a file that changes meanwhile is caught
// as for a cryo image), and every check that follows is the same.

// foreignNames are the files without .img that CRIU writes and cryo reads.
var foreignNames = map[string]bool{"stats-dump": true, "stats-restore": true}

// openForeign returns the opened image if dir is another tool's complete
// image, nil and no error if dir is not one (Open goes on as for cryo's).
func openForeign(dir string) (*Dir, error) {
	if _, err := os.Stat(filepath.Join(dir, SumsName)); !errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if _, err := os.Stat(filepath.Join(dir, InventoryName)); err != nil {
		return nil, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", dir, err)
	}
	s := &sums{chunk: ChunkSize, files: map[string]*fileSum{}}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "cryo-") || n == inventoryPart {
			return nil, nil // cryo's own, uncommitted
		}
		if !strings.HasSuffix(n, ".img") && !foreignNames[n] {
			continue // logs and other people's files are not ours to judge
		}
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("open image %s: %w", dir, &FormatError{File: n, Offset: -1, Err: fmt.Errorf("not a regular file (%v): %w", e.Type(), ErrImageCorrupt)})
		}
		if err := checkName(n); err != nil {
			return nil, fmt.Errorf("open image %s: %w", dir, &FormatError{File: n, Offset: -1, Err: fmt.Errorf("%w: %w", errBadName, err)})
		}
		f, err := sumOf(filepath.Join(dir, n), n, isPagesName(n))
		if err != nil {
			return nil, fmt.Errorf("open image %s: %w", dir, err)
		}
		s.files[n] = f
	}
	return &Dir{path: dir, sums: s, foreign: true}, nil
}
