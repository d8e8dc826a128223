package errs

import "errors"

// The one home of "not supported".
var ErrNotSupported = errors.New("not supported")
