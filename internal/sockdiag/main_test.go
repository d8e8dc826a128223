package sockdiag

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestMain fails the run if a test leaked a file descriptor, or if a
// thread of the test process is still in another network namespace once
// the tests are done: the threads that joined one must have died with
// their goroutines (socketIn, inNewNetns).
func TestMain(m *testing.M) {
	// Open a pollable file once, so that the runtime's netpoller fds
	// exist before the baseline is taken.
	if f, err := os.Open(os.DevNull); err == nil {
		f.Close()
	}
	home, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	before, err := openFds()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	after, err := openFds()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for fd, link := range after {
		if _, ok := before[fd]; !ok {
			fmt.Fprintf(os.Stderr, "leaked fd %d -> %s\n", fd, link)
			code = 1
		}
	}
	if err := threadsHome(home); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

func openFds() (map[int]string, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the directory's own fd, closed by now
		}
		out[fd] = link
	}
	return out, nil
}

// threadsHome checks that every thread is in network namespace home (the
// main thread included: the kernel shows its namespace as the process's).
// A thread whose goroutine ended while locked is ended by the runtime, but
// not at once: allow it a moment.
func threadsHome(home string) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		var away []string
		for _, e := range ents {
			ns, err := os.Readlink("/proc/self/task/" + e.Name() + "/ns/net")
			if err == nil && ns != home {
				away = append(away, e.Name()+" in "+ns)
			}
		}
		if len(away) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("threads left in another network namespace (home %s): %v", home, away)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
