package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
)

const (
	readyTimeout = 120 * time.Second
	exitTimeout  = 10 * time.Second
	cryoTimeout  = 120 * time.Second
)

// closeInheritedFds marks every fd above stderr that this process inherited
// (from go run, make, a terminal multiplexer...) close-on-exec, so that
// neither cryo nor a target gets one: cryo would refuse to dump a target
// holding a pipe whose other end is outside it.
func closeInheritedFds() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// setSubreaper makes this process the parent of orphans in its subtree:
// a target restored with -d is re-parented here when cryo exits, so the
// bench can kill and reap it by pid.
func setSubreaper() error { return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }

func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// live remembers the pids of the targets this bench started (or had
// restored) and has not reaped yet, so that an interrupted bench kills
// them, and only them.
var live = struct {
	sync.Mutex
	pids map[int]string // pid → target binary
}{pids: map[int]string{}}

func track(pid int, bin string) {
	live.Lock()
	live.pids[pid] = bin
	live.Unlock()
}

func untrack(pid int) {
	live.Lock()
	delete(live.pids, pid)
	live.Unlock()
}

// killLive kills every tracked pid that still runs our target binary.
func killLive() {
	live.Lock()
	defer live.Unlock()
	for pid, bin := range live.pids {
		if runs(pid, bin) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			reapPid(pid, time.Second)
		}
		delete(live.pids, pid)
	}
}

// runs reports whether pid is alive and executes bin.
func runs(pid int, bin string) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false
	}
	return strings.TrimSuffix(exe, " (deleted)") == bin
}

// reapPid waits up to d for pid (a child, or an orphan re-parented to us)
// to be gone, reaping it if it is ours.
func reapPid(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG|syscall.WALL, nil)
		if got == pid {
			return true
		}
		if errors.Is(err, syscall.ECHILD) {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// target is one running benchmark target started by the bench.
type target struct {
	pid  int
	bin  string
	out  string // its stdout and stderr
	done chan error
	// exited is set once the original process was reaped: from then on
	// its pid may name a restored copy or another process.
	exited bool
}

// startTarget runs bin with args, stdin /dev/null and stdout/stderr a file
// (never a pipe), and waits until it prints READY.
func startTarget(tmp, bin string, args ...string) (*target, error) {
	f, err := os.CreateTemp(tmp, "target-*.out")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Start()
	f.Close()
	if err != nil {
		return nil, err
	}
	t := &target{pid: cmd.Process.Pid, bin: bin, out: f.Name(), done: make(chan error, 1)}
	track(t.pid, bin)
	go func() { t.done <- cmd.Wait() }()
	deadline := time.Now().Add(readyTimeout)
	for {
		b, _ := os.ReadFile(t.out)
		if bytes.Contains(b, []byte("READY")) {
			return t, nil
		}
		select {
		case err := <-t.done:
			untrack(t.pid)
			return nil, fmt.Errorf("target %s %v exited before READY (%v): %s", filepath.Base(bin), args, err, b)
		default:
		}
		if time.Now().After(deadline) {
			t.kill()
			return nil, fmt.Errorf("target %s %v not READY after %v", filepath.Base(bin), args, readyTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitGone waits for the original target to die (the dump kills it) and be
// reaped, so that its pid is free for the restore.
func (t *target) waitGone() error {
	if t.exited {
		return nil
	}
	select {
	case <-t.done:
		t.exited = true
		untrack(t.pid)
		return nil
	case <-time.After(exitTimeout):
		return fmt.Errorf("target %d still alive %v after its dump", t.pid, exitTimeout)
	}
}

// kill kills the original target (not a restored copy) and reaps it.
func (t *target) kill() {
	if t.exited {
		return
	}
	select {
	case <-t.done:
	default:
		_ = syscall.Kill(t.pid, syscall.SIGKILL)
		select {
		case <-t.done:
		case <-time.After(exitTimeout):
			return // still tracked: killLive tries again
		}
	}
	t.exited = true
	untrack(t.pid)
}

// killRestored kills the restored copy of t (same pid, re-parented to us)
// and reaps it. It fails if the pid does not run the target binary.
func (t *target) killRestored() error {
	if !runs(t.pid, t.bin) {
		reapPid(t.pid, 0)
		return fmt.Errorf("restored pid %d is not running %s", t.pid, t.bin)
	}
	_ = syscall.Kill(t.pid, syscall.SIGKILL)
	if !reapPid(t.pid, exitTimeout) {
		return fmt.Errorf("restored pid %d survived SIGKILL", t.pid)
	}
	untrack(t.pid)
	return nil
}

// cryoRun is one run of bin/cryo.
type cryoRun struct {
	wall   time.Duration // fork to reaped, measured by the spawn helper
	maxRSS int64         // ru_maxrss of the cryo process, KiB
}

// runCryo runs cryo with args through the spawn helper (see
// targets/spawn.c: wait4 from the Go bench would report the bench's own
// peak RSS), its output to a file (a pipe could be held open by a restored
// process), and returns its wall time and peak RSS.
func (e *env) runCryo(args ...string) (cryoRun, error) {
	f, err := os.CreateTemp(e.tmp, "cryo-*.out")
	if err != nil {
		return cryoRun{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	rep := f.Name() + ".rusage"
	defer os.Remove(rep)
	cmd := exec.Command(e.spawn, append([]string{rep, e.cryo}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return cryoRun{}, err
	}
	timer := time.AfterFunc(cryoTimeout, func() { _ = cmd.Process.Kill() })
	err = cmd.Wait()
	timer.Stop()
	if err != nil {
		out, _ := os.ReadFile(f.Name())
		return cryoRun{}, fmt.Errorf("cryo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	b, err := os.ReadFile(rep)
	if err != nil {
		return cryoRun{}, fmt.Errorf("spawn report: %w", err)
	}
	var ns, rss int64
	var status int
	if _, err := fmt.Sscanf(string(b), "wall_ns=%d maxrss_kib=%d status=%d", &ns, &rss, &status); err != nil {
		return cryoRun{}, fmt.Errorf("spawn report %q: %w", b, err)
	}
	return cryoRun{wall: time.Duration(ns), maxRSS: rss}, nil
}

// dumpStats reads stats-dump of an image directory.
func dumpStats(dir string) (*stats.DumpStatsEntry, error) {
	d, err := image.Open(dir)
	if err != nil {
		return nil, err
	}
	var s stats.StatsEntry
	if err := imageset.ReadOne(d, imageset.StatsDump, &s); err != nil {
		return nil, err
	}
	if s.GetDump() == nil {
		return nil, fmt.Errorf("%s: stats-dump has no dump entry", dir)
	}
	return s.GetDump(), nil
}

// dirSizes returns the apparent size of every regular file in dir, and of
// the pages-*.img files alone, with the paths of the latter.
func dirSizes(dir string) (total, pages int64, pageFiles []string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, nil, err
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			return 0, 0, nil, err
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		total += fi.Size()
		if strings.HasPrefix(e.Name(), "pages-") && strings.HasSuffix(e.Name(), ".img") {
			pages += fi.Size()
			pageFiles = append(pageFiles, filepath.Join(dir, e.Name()))
		}
	}
	return total, pages, pageFiles, nil
}
