// Command locks measures what file locks cost a dump and a restore: a
// process holding N POSIX locks on one file (none adjacent, so none
// merge), dumped and restored with --file-locks, against the same process
// holding none. The figure is the time per lock: (time with N locks - time
// with none) / N, for the whole dump and the whole restore, and for the
// restore's locks stage alone (taking every lock and reading them back),
// from its log, and the dump's collect stage (where the locks are read),
// less the lockless run's.
//
// Run it as root after `make build`: go run ./bench/locks
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	repo    = flag.String("repo", ".", "repository root (bin/cryo)")
	imgBase = flag.String("images", "/dev/shm", "where images go")
	counts  = flag.String("locks", "1000,10000", "numbers of locks")
	reps    = flag.Int("reps", 5, "runs of each")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/locks:", err)
		os.Exit(1)
	}
}

func run() error {
	// cryo refuses a pipe to a process outside the tree: the target holds
	// only what it opens.
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(*imgBase, "cryo-bench-locks-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "posix")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, filepath.Join(*repo, "bench", "locks", "targets", "posix.c")).CombinedOutput(); err != nil {
		return fmt.Errorf("gcc: %v\n%s", err, out)
	}
	cryo := filepath.Join(*repo, "bin", "cryo")
	base, err := measure(cryo, bin, tmp, 0)
	if err != nil {
		return err
	}
	fmt.Printf("POSIX locks on one file, %d runs each, images in %s; times min / median / max\n", *reps, *imgBase)
	fmt.Printf("%-7s %-24s %-24s %-24s %-24s\n", "locks", "dump (ms)", "restore (ms)", "restore: locks stage", "dump: collect stage")
	fmt.Printf("%-7d %-24s %-24s %-24s %-24s\n", 0, base[0], base[1], base[2], base[3])
	for _, s := range strings.Split(*counts, ",") {
		n, _ := strconv.Atoi(s)
		m, err := measure(cryo, bin, tmp, n)
		if err != nil {
			return fmt.Errorf("%d locks: %w", n, err)
		}
		fmt.Printf("%-7d %-24s %-24s %-24s %-24s\n", n, m[0], m[1], m[2], m[3])
		per := func(i int) string {
			c, b := m[i].sorted(), base[i].med()
			f := func(v float64) float64 { return (v - b) * 1000 / float64(n) }
			return fmt.Sprintf("%.1f µs (%.1f to %.1f)", f(c[len(c)/2]), f(c[0]), f(c[len(c)-1]))
		}
		fmt.Printf("        per lock, less the lockless run's median: dump %s, restore %s\n", per(0), per(1))
		fmt.Printf("        per lock, stages: restore's locks stage %s, dump's collect stage %s\n", m[2].perLock(n), per(3))
	}
	return nil
}

type samples []float64 // ms

func (s samples) sorted() samples {
	c := append(samples(nil), s...)
	sort.Float64s(c)
	return c
}
func (s samples) med() float64 { c := s.sorted(); return c[len(c)/2] }
func (s samples) String() string {
	c := s.sorted()
	return fmt.Sprintf("%.1f / %.1f / %.1f", c[0], c[len(c)/2], c[len(c)-1])
}
func (s samples) perLock(n int) string {
	c := s.sorted()
	return fmt.Sprintf("%.1f µs (%.1f-%.1f)", c[len(c)/2]*1000/float64(n), c[0]*1000/float64(n), c[len(c)-1]*1000/float64(n))
}

var (
	stageRe   = regexp.MustCompile(`msg="stage done" stage=locks took=(\S+)`)
	collectRe = regexp.MustCompile(`msg="stage done" stage=collect took=(\S+)`)
)

// logged is the duration re finds in the log file, in ms.
func logged(path string, re *regexp.Regexp) float64 {
	b, _ := os.ReadFile(path)
	if m := re.FindSubmatch(b); m != nil {
		d, _ := time.ParseDuration(string(m[1]))
		return ms(d)
	}
	return 0
}

// measure dumps and restores a target holding n locks reps times: the
// dump, restore, restore's locks stage and dump's collect stage times.
func measure(cryo, bin, tmp string, n int) ([4]samples, error) {
	var out [4]samples
	for i := 0; i < *reps; i++ {
		dir := filepath.Join(tmp, fmt.Sprintf("run-%d-%d", n, i))
		os.MkdirAll(dir, 0o700)
		log, _ := os.Create(filepath.Join(dir, "target.log"))
		cmd := exec.Command(bin, filepath.Join(dir, "file"), strconv.Itoa(n))
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return out, err
		}
		pid := cmd.Process.Pid
		if err := waitReady(filepath.Join(dir, "target.log")); err != nil {
			cmd.Process.Kill()
			return out, err
		}
		img := filepath.Join(dir, "img")
		t0 := time.Now()
		if b, err := exec.Command(cryo, "dump", "-t", strconv.Itoa(pid), "-D", img, "--file-locks", "-v4", "-o", "dump.log").CombinedOutput(); err != nil {
			cmd.Process.Kill()
			return out, fmt.Errorf("dump: %v\n%s", err, b)
		}
		out[0] = append(out[0], ms(time.Since(t0)))
		cmd.Wait()
		t0 = time.Now()
		b, err := exec.Command(cryo, "restore", "-D", img, "-d", "--file-locks", "-v4", "-o", "restore.log").CombinedOutput()
		if err != nil {
			return out, fmt.Errorf("restore: %v\n%s", err, b)
		}
		out[1] = append(out[1], ms(time.Since(t0)))
		out[2] = append(out[2], logged(filepath.Join(img, "restore.log"), stageRe))
		out[3] = append(out[3], logged(filepath.Join(img, "dump.log"), collectRe))
		if err := countLocks(pid, n); err != nil {
			return out, err
		}
		unix.Kill(pid, unix.SIGKILL)
		for {
			var ws unix.WaitStatus
			if p, err := unix.Wait4(pid, &ws, 0, nil); p == pid || err != nil {
				break
			}
		}
		os.RemoveAll(dir)
	}
	return out, nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func waitReady(log string) error {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if b, _ := os.ReadFile(log); strings.HasPrefix(string(b), "READY") {
			return nil
		}
	}
	return fmt.Errorf("target not ready")
}

// countLocks checks that the restored process holds its n locks.
func countLocks(pid, n int) error {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return err
	}
	defer f.Close()
	got := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 4 && fs[1] == "POSIX" && fs[4] == strconv.Itoa(pid) {
			got++
		}
	}
	if got != n {
		return fmt.Errorf("restored pid %d holds %d POSIX locks, want %d", pid, got, n)
	}
	return nil
}
