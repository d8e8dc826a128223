package sockdiag

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/cryo-project/cryo/internal/errs"
)

var (
	// ErrMalformed is matched (errors.Is) by every [*ParseError]: the bytes
	// do not follow the layout the kernel writes.
	ErrMalformed = errors.New("malformed sock_diag reply")

	// ErrTooLarge is matched when a reply exceeds one of the package's
	// limits (see the package documentation). Such an error is not a
	// *ParseError and does not match ErrMalformed: the reply may well be
	// genuine, only more than cryo is willing to hold.
	ErrTooLarge = errors.New("exceeds sock_diag limit")

	// ErrNotSupported is matched when the kernel has no sock_diag handler
	// for the family or protocol asked about (it answers ENOENT: the
	// handler is a module that is not built, such as raw_diag without
	// CONFIG_INET_RAW_DIAG). The kernel's errno is wrapped too. It wraps
	// errs.ErrNotSupported, so that a dump refused for want of a handler
	// is found by the same errors.Is as every other refusal.
	ErrNotSupported = fmt.Errorf("%w by this kernel's sock_diag", errs.ErrNotSupported)
)

// ParseError reports where a sock_diag reply failed to parse.
type ParseError struct {
	// Offset is the byte offset, from the start of the reply (the first
	// byte of the first datagram), of the netlink message or attribute
	// that failed.
	Offset int64
	// Err says what was wrong.
	Err error
}

func (e *ParseError) Error() string {
	b := make([]byte, 0, 80)
	b = append(b, "sock_diag reply (byte "...)
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
// stays reachable.
func (e *ParseError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrMalformed}
	}
	return []error{ErrMalformed, e.Err}
}
