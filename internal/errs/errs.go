// Package errs holds the sentinel errors that more than one package of
// cryo returns, so that errors.Is works across them: a dump, a restore, the
// image loader and the feature probes all say "not supported" with the one
// ErrNotSupported, and a caller (the command line, the RPC, a test) tests
// for it once. It imports nothing of cryo's and nothing may be added here
// that is not a sentinel.
package errs

import "errors"

var (
	// ErrNotSupported marks something this version of cryo, or this
	// kernel, cannot do yet: an fd type, a socket family, image content.
	// The error that wraps it names what and where.
	ErrNotSupported = errors.New("not supported")

	// ErrPidTaken reports that a pid or tid the image needs is in use.
	ErrPidTaken = errors.New("pid in use")

	// ErrCredsRefused marks credentials of an image that this restorer may
	// not give (docs/security.md).
	ErrCredsRefused = errors.New("credentials refused")
)
