package image

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
)

// ghostChunksThresh is CRIU's GHOST_CHUNKS_THRESH (files-reg.c): regular
// files this large are stored as (ghost_chunk_entry, data) pairs covering
// their data extents only, smaller ones as raw bytes after the entry. cryo
// follows the same rule so that CRIU restores its ghost files.
const ghostChunksThresh = 3 * 4096

// Whence values for lseek(2) that io does not name.
const (
	seekData = 3
	seekHole = 4
)

// GhostName is the file name of the ghost file image with the given id.
func GhostName(id uint32) string { return fmt.Sprintf("ghost-file-%x.img", id) }

// WriteGhostFile writes ghost-file-<id>.img: e, then, for a regular file,
// the contents of src (which must be e's file, opened for reading). Chunks
// and Size of e are set here, following CRIU's rule.
func (d *Dir) WriteGhostFile(id uint32, e *ghost_file.GhostFileEntry, src *os.File) (err error) {
	w, err := d.Create(GhostName(id), "GHOST_FILE")
	if err != nil {
		return err
	}
	defer func() {
		if cerr := w.Close(); err == nil {
			err = cerr
		}
	}()
	var size int64
	regular := e.GetMode()&syscall.S_IFMT == syscall.S_IFREG
	if regular {
		st, err := src.Stat()
		if err != nil {
			return fmt.Errorf("ghost file %#x: %w", id, err)
		}
		size = st.Size()
	}
	if regular && size >= ghostChunksThresh {
		e.Chunks, e.Size = ptr(true), ptr(uint64(size))
	} else {
		e.Chunks, e.Size = nil, nil
	}
	if err := w.Write(e); err != nil {
		return err
	}
	if !regular {
		return nil
	}
	if !e.GetChunks() {
		return w.copyRaw(io.NewSectionReader(src, 0, size), size)
	}
	return forEachExtent(src, size, func(off, n int64) error {
		if err := w.Write(&ghost_file.GhostChunkEntry{Len: ptr(uint64(n)), Off: ptr(uint64(off))}); err != nil {
			return err
		}
		return w.copyRaw(io.NewSectionReader(src, off, n), n)
	})
}

// forEachExtent calls fn for each data extent of f below size, skipping
// holes so that sparse files stay sparse. A filesystem without
// SEEK_DATA/SEEK_HOLE gives one extent: the whole file.
func forEachExtent(f *os.File, size int64, fn func(off, n int64) error) error {
	for off := int64(0); off < size; {
		data, err := f.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			return nil // only a hole remains
		}
		if errors.Is(err, syscall.EINVAL) && off == 0 {
			return fn(0, size)
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := f.Seek(data, seekHole)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		hole = min(hole, size)
		if hole <= data {
			return nil
		}
		if err := fn(data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// ReadGhostFile reads ghost-file-<id>.img, writes the contents of a regular
// file to dst at their offsets (holes are left unwritten: truncate dst to
// the returned entry's Size to restore its length) and returns the entry.
func (d *Dir) ReadGhostFile(id uint32, dst io.WriterAt) (*ghost_file.GhostFileEntry, error) {
	name := GhostName(id)
	r, err := d.Open(name, "GHOST_FILE")
	if err != nil {
		return nil, err
	}
	defer r.Close()
	e := &ghost_file.GhostFileEntry{}
	if err := r.Next(e); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, corrupt(name, r.off, "no ghost_file_entry")
		}
		return nil, err
	}
	if e.GetMode()&syscall.S_IFMT != syscall.S_IFREG {
		if r.Remaining() != 0 {
			return nil, corrupt(name, r.off, "%d bytes of contents for a non-regular file (mode %#o)", r.Remaining(), e.GetMode())
		}
		return e, nil
	}
	if !e.GetChunks() {
		s, _ := r.Raw(r.Remaining())
		if _, err := io.Copy(io.NewOffsetWriter(dst, 0), s); err != nil {
			return nil, fmt.Errorf("ghost file %s: %w", name, err)
		}
		return e, nil
	}
	for end := uint64(0); ; {
		at := r.off
		var c ghost_file.GhostChunkEntry
		if err := r.Next(&c); errors.Is(err, io.EOF) {
			return e, nil
		} else if err != nil {
			return nil, err
		}
		// Chunks come in file order and stay inside the recorded size; a
		// chunk elsewhere would make restore write where the dump never read.
		if c.GetOff() < end || c.GetLen() > e.GetSize() || c.GetOff() > e.GetSize()-c.GetLen() {
			return nil, corrupt(name, at, "chunk [%#x, +%#x) outside file size %d or out of order", c.GetOff(), c.GetLen(), e.GetSize())
		}
		s, err := r.Raw(int64(c.GetLen()))
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(io.NewOffsetWriter(dst, int64(c.GetOff())), s); err != nil {
			return nil, fmt.Errorf("ghost file %s: %w", name, err)
		}
		end = c.GetOff() + c.GetLen()
	}
}

func ptr[T any](v T) *T { return &v }
