package image

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// OpenRaw opens one of cryo's own sidecar files (written with CreateRaw)
// after checking it against its recorded size and CRC32C.
func (d *Dir) OpenRaw(name string) (io.ReadCloser, error) {
	s, err := d.lookup(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(d.path, name))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	if err := checkFile(f, s, true); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
