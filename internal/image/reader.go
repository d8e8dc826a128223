package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"
)

// Reader reads the entries of one protobuf image file.
type Reader struct {
	name string
	r    io.ReaderAt
	size int64
	off  int64
	buf  []byte
	c    io.Closer
}

// NewReader reads an image of type magic from r, which holds size bytes,
// and checks its header. name is used only in errors. Dir.Open is the usual
// way in; NewReader serves tests, fuzzing and images held in memory.
func NewReader(name string, r io.ReaderAt, size int64, magic string) (*Reader, error) {
	hdr, err := header(magic)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	rd := &Reader{name: name, r: r, size: size}
	var w [4]byte
	for i, want := range hdr {
		off := int64(4 * i)
		if err := rd.readAt(w[:], off); err != nil {
			return nil, corrupt(name, off, "truncated header: file size %d", size)
		}
		if got := binary.LittleEndian.Uint32(w[:]); got != want {
			return nil, &FormatError{File: name, Offset: off, Err: fmt.Errorf("magic %s, want %s (opened as %s): %w", magicName(got), magicName(want), magic, ErrWrongMagic)}
		}
	}
	rd.off = int64(4 * len(hdr))
	return rd, nil
}

// readAt fills p from off, failing if that reaches past size.
func (r *Reader) readAt(p []byte, off int64) error {
	if off < 0 || int64(len(p)) > r.size-off {
		return io.ErrUnexpectedEOF
	}
	n, err := r.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Offset is where the next entry starts.
func (r *Reader) Offset() int64 { return r.off }

// Next decodes the next entry into m. It returns io.EOF exactly at the end
// of the file, and a *FormatError for anything else that is not a whole
// entry.
func (r *Reader) Next(m proto.Message) error {
	if r.off == r.size {
		return io.EOF
	}
	start := r.off
	var w [4]byte
	if err := r.readAt(w[:], start); err != nil {
		return r.ioErr(start, "entry length", err)
	}
	n := binary.LittleEndian.Uint32(w[:])
	rest := r.size - start - 4
	// Both checks come before the allocation: n is untrusted.
	if int64(n) > rest {
		return corrupt(r.name, start, "entry length %d exceeds file size %d", n, r.size)
	}
	if n > MaxEntrySize {
		return corrupt(r.name, start, "entry length %d exceeds the %d-byte limit", n, MaxEntrySize)
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	b := r.buf[:n]
	if err := r.readAt(b, start+4); err != nil {
		return r.ioErr(start, "entry", err)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return corrupt(r.name, start, "decode %d-byte entry as %s: %v", n, m.ProtoReflect().Descriptor().FullName(), err)
	}
	r.off = start + 4 + int64(n)
	return nil
}

func (r *Reader) ioErr(off int64, what string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return corrupt(r.name, off, "truncated %s: file size %d", what, r.size)
	}
	return fmt.Errorf("read %s at offset %#x: %w", r.name, off, err)
}

// Raw returns the next n bytes as unframed data (what follows an entry in a
// ghost file or pipe data image) and moves past them.
func (r *Reader) Raw(n int64) (*io.SectionReader, error) {
	if n < 0 || n > r.size-r.off {
		return nil, corrupt(r.name, r.off, "%d bytes of data exceed file size %d", n, r.size)
	}
	s := io.NewSectionReader(r.r, r.off, n)
	r.off += n
	return s, nil
}

// Remaining is how many bytes follow the current offset.
func (r *Reader) Remaining() int64 { return r.size - r.off }

// Close releases the file behind a Reader from Dir.Open.
func (r *Reader) Close() error {
	if r.c == nil {
		return nil
	}
	c := r.c
	r.c = nil
	return c.Close()
}

// Open opens the image file name of type magic. Small files are read whole
// and their CRC32C checked again on those very bytes, so what is parsed is
// what the dump wrote even if the file changed after Dir.Open verified it.
func (d *Dir) Open(name, magic string) (*Reader, error) {
	s, err := d.lookup(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(d.path, name))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	if s.chunks == nil && s.size <= inMemoryLimit {
		defer f.Close()
		b := make([]byte, s.size+1) // s.size is bounded by inMemoryLimit here
		n, err := io.ReadFull(f, b)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		b = b[:n]
		if uint64(n) != s.size {
			return nil, &FormatError{File: name, Offset: int64(min(uint64(n), s.size)), Err: fmt.Errorf("size changed to %d since open, recorded %d: %w", n, s.size, ErrChecksum)}
		}
		if got := crc32.Checksum(b, castagnoli); got != s.crc {
			return nil, &FormatError{File: name, Offset: -1, Err: fmt.Errorf("crc32c %#08x, recorded %#08x: %w", got, s.crc, ErrChecksum)}
		}
		return NewReader(name, bytes.NewReader(b), int64(n), magic)
	}
	if s.size > 1<<62 {
		f.Close()
		return nil, corrupt(name, -1, "recorded size %d out of range", s.size)
	}
	r, err := NewReader(name, f, int64(s.size), magic)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.c = f
	return r, nil
}

// ReadOne reads an image that holds exactly one entry (inventory.img,
// fs-<pid>.img, mm-<pid>.img, core-<tid>.img...).
func (d *Dir) ReadOne(name, magic string, m proto.Message) error {
	r, err := d.Open(name, magic)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.Next(m); err != nil {
		if errors.Is(err, io.EOF) {
			return corrupt(name, r.off, "no entry in an image that holds one")
		}
		return err
	}
	if r.off != r.size {
		return corrupt(name, r.off, "%d bytes after the single entry", r.size-r.off)
	}
	return nil
}

// PagesReader reads a pages image sequentially and checks each chunk's
// CRC32C before handing out any byte of it.
type PagesReader struct {
	name   string
	f      *os.File
	sums   *fileSum
	chunk  int64
	buf    []byte // current verified chunk
	pos    int    // read position in buf
	off    int64  // file offset of buf[0]
	loaded bool
}

// OpenPages opens pages-<id>.img.
func (d *Dir) OpenPages(id uint32) (*PagesReader, error) {
	name := PagesName(id)
	s, err := d.lookup(name)
	if err != nil {
		return nil, err
	}
	if s.chunks == nil {
		return nil, corrupt(name, -1, "recorded without chunk sums")
	}
	f, err := os.Open(filepath.Join(d.path, name))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	return &PagesReader{name: name, f: f, sums: s, chunk: int64(d.sums.chunk), buf: make([]byte, 0, d.sums.chunk)}, nil
}

// Read returns verified page data; io.EOF after the recorded size.
func (pr *PagesReader) Read(p []byte) (int, error) {
	if pr.pos == len(pr.buf) {
		if err := pr.load(); err != nil {
			return 0, err
		}
	}
	n := copy(p, pr.buf[pr.pos:])
	pr.pos += n
	return n, nil
}

// WriteTo hands out whole verified chunks, so io.Copy from a PagesReader
// needs no extra buffer.
func (pr *PagesReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if pr.pos == len(pr.buf) {
			if err := pr.load(); errors.Is(err, io.EOF) {
				return total, nil
			} else if err != nil {
				return total, err
			}
		}
		n, err := w.Write(pr.buf[pr.pos:])
		pr.pos += n
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// load reads and verifies the next chunk.
func (pr *PagesReader) load() error {
	next := int64(0)
	if pr.loaded {
		next = pr.off + int64(len(pr.buf))
	}
	if uint64(next) >= pr.sums.size {
		return io.EOF
	}
	i := next / pr.chunk
	if i >= int64(len(pr.sums.chunks)) {
		return corrupt(pr.name, next, "no checksum for chunk %d", i)
	}
	n := min(pr.chunk, int64(pr.sums.size)-next)
	b := pr.buf[:n]
	got, err := pr.f.ReadAt(b, next)
	if got < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			return corrupt(pr.name, next+int64(got), "truncated: chunk at %#x ends early, recorded size %d", next, pr.sums.size)
		}
		return fmt.Errorf("read %s at offset %#x: %w", pr.name, next, err)
	}
	if sum := crc32.Checksum(b, castagnoli); sum != pr.sums.chunks[i] {
		return &FormatError{File: pr.name, Offset: next, Err: fmt.Errorf("chunk %d (%d bytes) crc32c %#08x, recorded %#08x: %w", i, n, sum, pr.sums.chunks[i], ErrChecksum)}
	}
	pr.buf, pr.pos, pr.off, pr.loaded = b, 0, next, true
	return nil
}

// Size is the pages file's recorded size.
func (pr *PagesReader) Size() int64 { return int64(pr.sums.size) }

// Close closes the file.
func (pr *PagesReader) Close() error { return pr.f.Close() }
