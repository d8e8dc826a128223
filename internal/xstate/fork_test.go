package xstate

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

func forkSleep(attr *unix.SysProcAttr) (int, error) {
	p, err := os.StartProcess("/bin/sleep", []string{"sleep", "30"}, &os.ProcAttr{Sys: (*syscall.SysProcAttr)(attr)})
	if err != nil {
		return 0, err
	}
	return p.Pid, nil
}
