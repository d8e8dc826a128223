package procfs

import (
	"errors"
	"strconv"
)

var (
	// ErrMalformed is matched (errors.Is) by every [*ParseError]: the data
	// does not follow the format the kernel prints.
	ErrMalformed = errors.New("malformed /proc data")

	// ErrTooLarge is matched when a file or a line exceeds the package's
	// limits. It exists so that callers can tell "the kernel printed more than
	// we are willing to hold" from "the kernel printed nonsense".
	ErrTooLarge = errors.New("exceeds size limit")
)

// ParseError reports where a /proc file failed to parse.
type ParseError struct {
	// File is the path read ("/proc/412/smaps"), or the file's base name
	// ("smaps") when the caller handed bytes to a ParseXxx function.
	File string
	// Line is the 1-based line number, or 0 for binary files (auxv).
	Line int
	// Offset is the byte offset from the start of the file of the line or
	// record that failed.
	Offset int64
	// Err says what was wrong; it may wrap ErrTooLarge.
	Err error
}

func (e *ParseError) Error() string {
	b := make([]byte, 0, 64+len(e.File))
	b = append(b, e.File...)
	if e.Line > 0 {
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(e.Line), 10)
	}
	b = append(b, " (byte "...)
	b = strconv.AppendInt(b, e.Offset, 10)
	b = append(b, "): "...)
	if e.Err != nil {
		b = append(b, e.Err.Error()...)
	} else {
		b = append(b, ErrMalformed.Error()...)
	}
	return string(b)
}

// Unwrap returns both ErrMalformed and the specific cause, so that
// errors.Is(err, ErrMalformed) holds for every ParseError while the cause
// (e.g. ErrTooLarge) stays reachable.
func (e *ParseError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrMalformed}
	}
	return []error{ErrMalformed, e.Err}
}

// quote renders a piece of untrusted input for an error message: bounded in
// length, because a hostile file name could otherwise make every error
// message megabytes long, and escaped, because it may contain control bytes.
func quote(b []byte) string {
	const max = 64
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}
