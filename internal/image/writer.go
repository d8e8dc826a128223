package image

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"google.golang.org/protobuf/proto"
)

func newCRC() hash.Hash32 { return crc32.New(castagnoli) }

// sumFile is an *os.File that keeps the size and CRC32C of what was written,
// below the buffer so that the sums describe the bytes on disk.
type sumFile struct {
	f    *os.File
	size uint64
	crc  uint32
	// chunked files (pages) are checked per chunk only: no whole-file CRC.
	chunked bool
}

func (s *sumFile) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	if !s.chunked {
		s.crc = crc32.Update(s.crc, castagnoli, p[:n])
	}
	s.size += uint64(n)
	return n, err
}

// Writer appends entries to one protobuf image file. Close it before
// Dir.Commit; a Writer is not safe for concurrent use.
type Writer struct {
	d      *Dir
	name   string
	sf     sumFile
	bw     *bufio.Writer
	buf    []byte
	closed bool
}

// Create starts the image file name (a base name such as "core-412.img")
// holding entries of the image type magic (a go-criu magic name such as
// "CORE"), mode 0600. inventory.img is written under a temporary name until
// Commit.
func (d *Dir) Create(name, magic string) (*Writer, error) {
	hdr, err := header(magic)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	f, _, err := d.createFile(name)
	if err != nil {
		return nil, err
	}
	w := &Writer{d: d, name: name, sf: sumFile{f: f}}
	w.bw = bufio.NewWriterSize(&w.sf, 64<<10)
	for _, m := range hdr {
		w.buf = binary.LittleEndian.AppendUint32(w.buf, m)
	}
	if _, err := w.bw.Write(w.buf); err != nil {
		return nil, w.fail(err)
	}
	return w, nil
}

// Write appends m as one entry: its length as a little-endian u32, then its
// protobuf encoding.
func (w *Writer) Write(m proto.Message) error {
	if w.closed {
		return fmt.Errorf("write %s: writer closed", w.name)
	}
	var err error
	// Reserve the length word, then marshal after it: one buffer, one write.
	w.buf, err = proto.MarshalOptions{}.MarshalAppend(append(w.buf[:0], 0, 0, 0, 0), m)
	if err != nil {
		return fmt.Errorf("write %s: encode %T: %w", w.name, m, err)
	}
	n := len(w.buf) - 4
	if n > MaxEntrySize {
		return fmt.Errorf("write %s: %T encodes to %d bytes, over the %d-byte entry limit", w.name, m, n, MaxEntrySize)
	}
	binary.LittleEndian.PutUint32(w.buf, uint32(n))
	if _, err := w.bw.Write(w.buf); err != nil {
		return fmt.Errorf("write %s: %w", w.name, err)
	}
	if cap(w.buf) > 1<<20 {
		w.buf = nil // one huge mm_entry should not pin its buffer for the rest of the dump
	}
	return nil
}

// WriteRaw appends bytes that follow an entry without framing, as CRIU does
// for pipe data or ghost file contents.
func (w *Writer) WriteRaw(p []byte) error {
	if w.closed {
		return fmt.Errorf("write %s: writer closed", w.name)
	}
	if _, err := w.bw.Write(p); err != nil {
		return fmt.Errorf("write %s: %w", w.name, err)
	}
	return nil
}

// copyRaw appends n bytes read from r.
func (w *Writer) copyRaw(r io.Reader, n int64) error {
	got, err := io.CopyN(w.bw, r, n)
	if err != nil {
		return fmt.Errorf("write %s: copied %d of %d bytes: %w", w.name, got, n, err)
	}
	return nil
}

// Close flushes the file and records its size and checksum for Commit.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if err := w.bw.Flush(); err != nil {
		return w.fail(err)
	}
	if err := w.sf.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", w.name, err)
	}
	w.d.closed(&fileSum{name: w.name, size: w.sf.size, crc: w.sf.crc})
	return nil
}

// fail closes the file after an error; Abort removes it.
func (w *Writer) fail(err error) error {
	w.closed = true
	w.sf.f.Close()
	w.d.mu.Lock()
	delete(w.d.open, w.name)
	w.d.mu.Unlock()
	return fmt.Errorf("write %s: %w", w.name, err)
}

// PagesName is the file name of the pages image with the given id.
func PagesName(id uint32) string { return fmt.Sprintf("pages-%d.img", id) }

// PagesWriter writes a raw pages image (no magic, no framing: the pagemap
// says what is where) and keeps one CRC32C per ChunkSize bytes of it.
type PagesWriter struct {
	d      *Dir
	name   string
	sf     sumFile
	bw     *bufio.Writer
	chunk  uint32   // CRC of the chunk being filled
	fill   int      // bytes in that chunk
	chunks []uint32 // finished chunks
	closed bool
}

// CreatePages starts pages-<id>.img.
func (d *Dir) CreatePages(id uint32) (*PagesWriter, error) {
	name := PagesName(id)
	f, _, err := d.createFile(name)
	if err != nil {
		return nil, err
	}
	pw := &PagesWriter{d: d, name: name, sf: sumFile{f: f, chunked: true}}
	// Large writes (a batch of process_vm_readv) pass the buffer by; it only
	// gathers single pages.
	pw.bw = bufio.NewWriterSize(&pw.sf, 1<<20)
	return pw, nil
}

// Write appends page data.
func (pw *PagesWriter) Write(p []byte) (int, error) {
	if pw.closed {
		return 0, fmt.Errorf("write %s: writer closed", pw.name)
	}
	// A large write's checksums are computed while the kernel copies it
	// into the file: on a page-cache file system the copy and the CRC are
	// each as costly as the other, and a dump is bound by them.
	if len(p) < 1<<20 {
		n, err := pw.bw.Write(p)
		pw.sum(p[:n])
		if err != nil {
			return n, fmt.Errorf("write %s: %w", pw.name, err)
		}
		return n, nil
	}
	done := make(chan struct{})
	go func() {
		pw.sum(p)
		close(done)
	}()
	n, err := pw.bw.Write(p)
	<-done
	if err != nil {
		return n, fmt.Errorf("write %s: %w", pw.name, err)
	}
	return n, nil
}

func (pw *PagesWriter) sum(p []byte) {
	for len(p) > 0 {
		k := min(len(p), ChunkSize-pw.fill)
		pw.chunk = crc32.Update(pw.chunk, castagnoli, p[:k])
		pw.fill += k
		p = p[k:]
		if pw.fill == ChunkSize {
			pw.chunks = append(pw.chunks, pw.chunk)
			pw.chunk, pw.fill = 0, 0
		}
	}
}

// ReadFrom copies r to the pages file until EOF, so io.Copy into a
// PagesWriter moves whole chunks at a time.
func (pw *PagesWriter) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, ChunkSize)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := pw.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close flushes the file and records its chunk sums for Commit.
func (pw *PagesWriter) Close() error {
	if pw.closed {
		return nil
	}
	pw.closed = true
	ferr := pw.bw.Flush()
	cerr := pw.sf.f.Close()
	if ferr != nil || cerr != nil {
		pw.d.mu.Lock()
		delete(pw.d.open, pw.name)
		pw.d.mu.Unlock()
		return fmt.Errorf("close %s: %w", pw.name, firstErr(ferr, cerr))
	}
	chunks := pw.chunks
	if pw.fill > 0 {
		chunks = append(chunks, pw.chunk)
	}
	if chunks == nil {
		chunks = []uint32{} // an empty pages file is still a chunked record
	}
	pw.d.closed(&fileSum{name: pw.name, size: pw.sf.size, crc: pw.sf.crc, chunks: chunks})
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// rawWriter is a Writer without magic: cryo's own sidecar files.
type rawWriter struct {
	d      *Dir
	name   string
	sf     sumFile
	bw     *bufio.Writer
	closed bool
}

// CreateRaw starts a file of cryo's own format (not a CRIU image: its name
// should not end in .img). It is checksummed like any other file.
func (d *Dir) CreateRaw(name string) (io.WriteCloser, error) {
	f, _, err := d.createFile(name)
	if err != nil {
		return nil, err
	}
	rw := &rawWriter{d: d, name: name, sf: sumFile{f: f}}
	rw.bw = bufio.NewWriterSize(&rw.sf, 64<<10)
	return rw, nil
}

func (rw *rawWriter) Write(p []byte) (int, error) {
	if rw.closed {
		return 0, fmt.Errorf("write %s: writer closed", rw.name)
	}
	return rw.bw.Write(p)
}

func (rw *rawWriter) Close() error {
	if rw.closed {
		return nil
	}
	rw.closed = true
	ferr := rw.bw.Flush()
	cerr := rw.sf.f.Close()
	if ferr != nil || cerr != nil {
		rw.d.mu.Lock()
		delete(rw.d.open, rw.name)
		rw.d.mu.Unlock()
		return fmt.Errorf("close %s: %w", rw.name, firstErr(ferr, cerr))
	}
	rw.d.closed(&fileSum{name: rw.name, size: rw.sf.size, crc: rw.sf.crc})
	return nil
}

// ChunkSum is the checksum of one chunk of a pages file, as WriteChunk
// expects it: a writer may compute it on another goroutine, while the
// bytes are still in its cache.
func ChunkSum(p []byte) uint32 { return crc32.Update(0, castagnoli, p) }

// WriteChunk appends exactly one chunk (ChunkSize bytes, at a chunk
// boundary of the file) whose ChunkSum the caller already has. Anything
// else is written and checksummed as by Write.
func (pw *PagesWriter) WriteChunk(p []byte, sum uint32) (int, error) {
	if len(p) != ChunkSize || pw.fill != 0 || pw.bw.Buffered() != 0 {
		return pw.Write(p)
	}
	if pw.closed {
		return 0, fmt.Errorf("write %s: writer closed", pw.name)
	}
	n, err := pw.bw.Write(p)
	if err != nil {
		return n, fmt.Errorf("write %s: %w", pw.name, err)
	}
	pw.chunks = append(pw.chunks, sum)
	return n, nil
}

// WriteChunks appends whole chunks with their checksums in one writev, as
// WriteChunk does one at a time: fewer, larger writes cost the file system
// less per byte.
func (pw *PagesWriter) WriteChunks(bufs [][]byte, sums []uint32) (int, error) {
	if pw.closed {
		return 0, fmt.Errorf("write %s: writer closed", pw.name)
	}
	for _, b := range bufs {
		if len(b) != ChunkSize {
			return 0, fmt.Errorf("write %s: chunk of %d bytes", pw.name, len(b))
		}
	}
	if pw.fill != 0 || pw.bw.Buffered() != 0 {
		n := 0
		for i, b := range bufs {
			k, err := pw.WriteChunk(b, sums[i])
			n += k
			if err != nil {
				return n, err
			}
		}
		return n, nil
	}
	total := 0
	for len(bufs) > 0 {
		n, err := unix.Writev(int(pw.sf.f.Fd()), bufs)
		if err != nil {
			return total, fmt.Errorf("write %s: %w", pw.name, err)
		}
		total += n
		pw.sf.size += uint64(n)
		// A short write ends inside some chunk: finish that one by hand.
		for n > 0 && len(bufs) > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				pw.chunks = append(pw.chunks, sums[0])
				bufs, sums = bufs[1:], sums[1:]
				continue
			}
			rest := bufs[0][n:]
			for len(rest) > 0 {
				k, err := pw.sf.f.Write(rest)
				if err != nil {
					return total, fmt.Errorf("write %s: %w", pw.name, err)
				}
				rest = rest[k:]
				total += k
				pw.sf.size += uint64(k)
			}
			pw.chunks = append(pw.chunks, sums[0])
			bufs, sums = bufs[1:], sums[1:]
			n = 0
		}
	}
	return total, nil
}

// WriteLoose writes one framed image file outside any Dir: for what CRIU
// leaves beside a committed image (stats-restore, written by a restore),
// which the sidecar does not list and Open does not check. The file is
// written under a temporary name and renamed, so a reader never sees half
// of it.
func WriteLoose(path, magic string, msgs ...proto.Message) error {
	hdr, err := header(magic)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	var b []byte
	for _, m := range hdr {
		b = binary.LittleEndian.AppendUint32(b, m)
	}
	for _, m := range msgs {
		at := len(b)
		b, err = proto.MarshalOptions{}.MarshalAppend(append(b, 0, 0, 0, 0), m)
		if err != nil {
			return fmt.Errorf("write %s: encode %T: %w", path, m, err)
		}
		binary.LittleEndian.PutUint32(b[at:], uint32(len(b)-at-4))
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, fileMode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
