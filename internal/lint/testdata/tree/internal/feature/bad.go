package feature

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	sc "syscall"
	"unsafe" // want unsafe

	"golang.org/x/sys/unix"
)

var ErrNotSupported = errors.New("feature")

var errQuiet = errors.New("")

var ErrOld = errors.New("not supported by this kernel") // want notsupported

type probeError struct{ op string }

func (e *probeError) Error() string { return e.op }

// Is is where comparing with == belongs.
func (e *probeError) Is(target error) bool { return target == ErrNotSupported }

func raw() error {
	_, _, e := unix.Syscall(unix.SYS_USERFAULTFD, 0, 0, 0) // want rawsyscall
	if e == unix.EINVAL {                                  // want errcmp
		return e
	}
	_, _, e2 := sc.RawSyscall6(sc.SYS_PRCTL, 0, 0, 0, 0, 0, 0) // want rawsyscall
	if e2 != 0 {
		return e2
	}
	var b [8]byte
	_ = uintptr(unsafe.Pointer(&b[0]))
	return nil
}

func compare(err error, events uint32) error {
	if err == nil || events == unix.EPOLLIN {
		return nil
	}
	if err == io.EOF { // want errcmp
		return nil
	}
	if os.ErrNotExist != err { // want errcmp
		return nil
	}
	if err == errQuiet || (ErrNotSupported == err) { // want errcmp errcmp
		return nil
	}
	switch err {
	case unix.EAGAIN, unix.EINTR: // want errcmp errcmp
		return nil
	}
	if pe, ok := err.(*probeError); ok { // want errcmp
		return pe
	}
	switch err.(type) { // want errcmp
	case *probeError:
	}
	if errors.Is(err, io.EOF) || errors.Is(err, unix.EINTR) {
		return nil
	}
	return fmt.Errorf("compare: %w", err)
}

var refused = regexp.MustCompile(`refused`)

func text(err error) bool {
	if strings.Contains(err.Error(), "EPERM") { // want errtext
		return true
	}
	msg := err.Error()
	if msg == "EOF" || strings.HasPrefix(msg, "x") { // want errtext errtext
		return true
	}
	if refused.MatchString(err.Error()) { // want errtext
		return true
	}
	// Formatting a message is what Error is for.
	fmt.Println("probe failed: " + err.Error())
	return false
}

func refusals() []error {
	return []error{
		errors.New("userfaultfd unsupported"),                         // want notsupported
		fmt.Errorf("%s: not supported", "uffd"),                       // want notsupported
		fmt.Errorf("%s not supported: %v", "uffd", ErrNotSupported),   // want notsupported
		fmt.Errorf("%s: %w", "uffd", ErrNotSupported),                 // says it through the sentinel
		fmt.Errorf("uffd is not supported here: %w", ErrNotSupported), // wraps it
	}
}
