package image

import (
	"errors"
	"fmt"
)

// Sentinels for the ways an image directory can be unusable. Compare with
// errors.Is: every error this package returns about image content is a
// *FormatError wrapping one of them, or errs.ErrNotSupported for an intact
// checksum sidecar of a version this cryo does not read.
var (
	// ErrImageCorrupt: bytes in the directory do not form a valid image.
	ErrImageCorrupt = errors.New("image corrupt")

	// ErrIncomplete: the directory lacks inventory.img or the checksum
	// sidecar, so the dump that wrote it never committed (it crashed or is
	// still running).
	ErrIncomplete = errors.New("not a complete image")

	// ErrChecksum: a file's bytes differ from what the dump recorded. It
	// wraps ErrImageCorrupt.
	ErrChecksum = fmt.Errorf("checksum mismatch: %w", ErrImageCorrupt)

	// ErrWrongMagic: a file's header names another image type than the one
	// asked for. It wraps ErrImageCorrupt: cryo never opens a file by guess.
	ErrWrongMagic = fmt.Errorf("wrong magic: %w", ErrImageCorrupt)
)

// FormatError reports malformed image content with the file and byte offset
// at which it was found, in the manner of debug/elf.FormatError.
type FormatError struct {
	File   string // base name inside the image directory
	Offset int64  // byte offset in File; -1 when the problem is the whole file
	Err    error  // wraps one of the package sentinels, or errs.ErrNotSupported
}

func (e *FormatError) Error() string {
	if e.Offset < 0 {
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("%s: offset %#x: %v", e.File, e.Offset, e.Err)
}

func (e *FormatError) Unwrap() error { return e.Err }

// corrupt builds a FormatError wrapping ErrImageCorrupt with a formatted
// explanation.
func corrupt(file string, off int64, format string, args ...any) *FormatError {
	return &FormatError{File: file, Offset: off, Err: fmt.Errorf(format+": %w", append(args, ErrImageCorrupt)...)}
}
