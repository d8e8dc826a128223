package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"

	"github.com/cryo-project/cryo/internal/errs"
)

// SumsName is the checksum sidecar's file name. It does not end in .img so
// that tools which decode every *.img of a directory (crit, checkpointctl)
// pass it by.
const SumsName = "cryo-checksums"

const (
	sumsMagic   = "CRYOSUMS"
	sumsVersion = 1

	// ChunkSize is the span covered by one per-chunk checksum of a pages
	// file: small enough that a report points near the damage, large enough
	// that the sidecar stays at 16 bytes per MiB of memory.
	ChunkSize = 256 << 10

	minChunk = 4 << 10
	maxChunk = 64 << 20

	// maxSumsSize bounds the sidecar read on restore: 64 MiB holds the
	// chunk sums of 4 TiB of pages.
	maxSumsSize = 64 << 20

	maxNameLen = 255

	kindWhole   = 0
	kindChunked = 1

	// A record is at least name length, a one-byte name, kind, size, crc.
	minRecordSize = 2 + 1 + 1 + 8 + 4
)

// castagnoli is hardware accelerated on amd64 (SSE4.2) and arm64.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fileSum is what the sidecar records about one file.
type fileSum struct {
	name   string
	size   uint64
	crc    uint32
	chunks []uint32 // nil for whole-file records
}

// sums is a parsed sidecar.
type sums struct {
	chunk uint32
	files map[string]*fileSum
}

func (s *sums) sortedNames() []string {
	names := make([]string, 0, len(s.files))
	for n := range s.files {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// marshal encodes s in the layout drawn in the package doc. Records are
// sorted by name so that equal images give equal sidecars.
func (s *sums) marshal() []byte {
	b := make([]byte, 0, 64+32*len(s.files))
	b = append(b, sumsMagic...)
	b = binary.LittleEndian.AppendUint32(b, sumsVersion)
	b = binary.LittleEndian.AppendUint32(b, s.chunk)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.files)))
	for _, name := range s.sortedNames() {
		f := s.files[name]
		b = binary.LittleEndian.AppendUint16(b, uint16(len(name)))
		b = append(b, name...)
		if f.chunks != nil {
			b = append(b, kindChunked)
		} else {
			b = append(b, kindWhole)
		}
		b = binary.LittleEndian.AppendUint64(b, f.size)
		b = binary.LittleEndian.AppendUint32(b, f.crc)
		for _, c := range f.chunks {
			b = binary.LittleEndian.AppendUint32(b, c)
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// parseSums decodes a sidecar. It reads only within b and allocates in
// proportion to len(b), whatever the counts inside claim. The trailing CRC is
// checked last so that structural errors are reported where they are (and so
// that fuzzing reaches the record parser).
func parseSums(b []byte) (*sums, error) {
	bad := func(off int, format string, args ...any) error {
		return corrupt(SumsName, int64(off), format, args...)
	}
	const hdr = len(sumsMagic) + 4 + 4 + 4
	if len(b) > maxSumsSize {
		return nil, bad(0, "size %d exceeds limit %d", len(b), maxSumsSize)
	}
	if len(b) < hdr+4 {
		return nil, bad(0, "truncated header (%d bytes)", len(b))
	}
	if string(b[:len(sumsMagic)]) != sumsMagic {
		return nil, &FormatError{File: SumsName, Offset: 0, Err: fmt.Errorf("magic %q: %w", b[:len(sumsMagic)], ErrWrongMagic)}
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != sumsVersion {
		// Another version lays its records out differently, so only the
		// trailer can tell a sidecar of another cryo from a damaged one.
		if binary.LittleEndian.Uint32(b[len(b)-4:]) == crc32.Checksum(b[:len(b)-4], castagnoli) {
			return nil, &FormatError{File: SumsName, Offset: 8, Err: fmt.Errorf("sidecar version %d, this cryo reads %d: %w", v, sumsVersion, errs.ErrNotSupported)}
		}
		return nil, bad(8, "version %d (this cryo reads %d), and the sidecar's crc32c does not match", v, sumsVersion)
	}
	s := &sums{chunk: binary.LittleEndian.Uint32(b[12:])}
	if s.chunk < minChunk || s.chunk > maxChunk || s.chunk&(s.chunk-1) != 0 {
		return nil, bad(12, "chunk size %d is not a power of two in [%d, %d]", s.chunk, minChunk, maxChunk)
	}
	count := binary.LittleEndian.Uint32(b[16:])
	body := b[:len(b)-4] // records end where the trailer starts
	off := hdr
	if uint64(count) > uint64(len(body)-off)/minRecordSize {
		return nil, bad(16, "record count %d exceeds what %d bytes can hold", count, len(body)-off)
	}
	s.files = make(map[string]*fileSum, count)
	var prev string
	for i := uint32(0); i < count; i++ {
		start := off
		if len(body)-off < minRecordSize {
			return nil, bad(off, "record %d truncated", i)
		}
		n := int(binary.LittleEndian.Uint16(body[off:]))
		off += 2
		if n == 0 || n > maxNameLen || len(body)-off < n+1+8+4 {
			return nil, bad(start, "record %d: name length %d out of bounds", i, n)
		}
		name := string(body[off : off+n])
		off += n
		if err := checkName(name); err != nil {
			return nil, bad(start, "record %d: %v", i, err)
		}
		// Sorted, hence unique: one encoding per content.
		if name <= prev && i > 0 {
			return nil, bad(start, "record %d: %q out of order or listed twice", i, name)
		}
		prev = name
		f := &fileSum{name: name}
		kind := body[off]
		f.size = binary.LittleEndian.Uint64(body[off+1:])
		f.crc = binary.LittleEndian.Uint32(body[off+9:])
		off += 13
		switch kind {
		case kindWhole:
		case kindChunked:
			nc := f.size / uint64(s.chunk)
			if f.size%uint64(s.chunk) != 0 {
				nc++
			}
			if nc > uint64(len(body)-off)/4 {
				return nil, bad(start, "record %d (%s): %d chunk sums for size %d exceed the sidecar", i, name, nc, f.size)
			}
			f.chunks = make([]uint32, nc)
			for j := range f.chunks {
				f.chunks[j] = binary.LittleEndian.Uint32(body[off:])
				off += 4
			}
		default:
			return nil, bad(start+2+n, "record %d (%s): unknown kind %d", i, name, kind)
		}
		s.files[name] = f
	}
	if off != len(body) {
		return nil, bad(off, "%d bytes of trailing data after %d records", len(body)-off, count)
	}
	if want, got := binary.LittleEndian.Uint32(b[off:]), crc32.Checksum(body, castagnoli); want != got {
		return nil, &FormatError{File: SumsName, Offset: int64(off), Err: fmt.Errorf("sidecar crc32c %#08x, recorded %#08x: %w", got, want, ErrChecksum)}
	}
	return s, nil
}

// checkName accepts the base names cryo writes and nothing that could leave
// the directory or hide in it.
func checkName(name string) error {
	switch {
	case name == "" || len(name) > maxNameLen:
		return fmt.Errorf("name length %d out of bounds", len(name))
	case name == "." || name == ".." || strings.HasPrefix(name, "."):
		return fmt.Errorf("name %q starts with a dot", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q contains '/' or NUL", name)
	}
	return nil
}

var errBadName = errors.New("bad image file name")
