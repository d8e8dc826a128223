package feature

import (
	"io"
	"strings"
	"testing"
	"unsafe" // want unsafe

	"golang.org/x/sys/unix"
)

func TestText(t *testing.T) {
	err := compare(io.EOF, 0)
	// A test may check that a message names something.
	if err != nil && !strings.Contains(err.Error(), "compare") {
		t.Error(err)
	}
	if err == io.EOF { // want errcmp
		t.Error(err)
	}
	unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0) // want rawsyscall
	_ = unsafe.Sizeof(err)
}
