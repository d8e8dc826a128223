package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// workerEnv marks the re-executed cryo that does a dump's work. Its value is
// the pid of the supervising cryo.
const workerEnv = "CRYO_DUMP_WORKER"

// supervise runs the current command again as a worker process and waits
// for it, forwarding SIGINT, SIGTERM and SIGHUP.
//
// Why: while cryo traces a thread, that thread's registers may briefly be
// set up for an injected syscall. If the tracer dies then (kill -9 of cryo),
// the kernel detaches the thread with those registers and the program
// crashes. The worker does the tracing; the process the user started (and
// may kill) only supervises. A worker whose supervisor disappears aborts the
// dump at its next step and puts the process back exactly as it was.
func supervise() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), workerEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dump worker: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code := ee.ExitCode()
				if code < 0 {
					code = 1
				}
				return &exitStatus{code: code, err: errSilent}
			}
			return err
		}
	}
}

// errSilent is an error whose message the worker already printed.
var errSilent = errors.New("")

// workerContext is cancelled when the worker should give up: on SIGINT,
// SIGTERM or SIGHUP, or when its supervisor is gone (re-parented).
func workerContext() (context.Context, bool) {
	v := os.Getenv(workerEnv)
	if v == "" {
		return nil, false
	}
	parent, _ := strconv.Atoi(v)
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case s := <-sigs:
				cancel(fmt.Errorf("interrupted by %v", s))
				return
			case <-t.C:
				if os.Getppid() != parent {
					cancel(errors.New("cryo dump was killed"))
					return
				}
			}
		}
	}()
	return ctx, true
}
