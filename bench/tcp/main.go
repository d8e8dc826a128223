// Command tcp measures what established TCP connections cost a dump and a
// restore (--tcp-established, TCP repair): a process holding N loopback
// connections, both ends its own (2N sockets), each end with 100 unread
// bytes, against the same process holding none. The figures are per
// connection: (time with N - time with none) / N, for the whole dump and
// the whole restore, and the dump's repair pass alone (every connection
// put in repair mode and read, from its log). The network lock is skipped
// (--network-lock skip): it is another figure.
//
// Run it as root after `make build`: go run ./bench/tcp
package main

import (
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
	counts  = flag.String("conns", "100,1000", "numbers of connections")
	reps    = flag.Int("reps", 3, "runs of each")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/tcp:", err)
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
	tmp, err := os.MkdirTemp(*imgBase, "cryo-bench-tcp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "conns")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, filepath.Join(*repo, "bench", "tcp", "targets", "conns.c")).CombinedOutput(); err != nil {
		return fmt.Errorf("gcc: %v\n%s", err, out)
	}
	cryo := filepath.Join(*repo, "bin", "cryo")
	base, err := measure(cryo, bin, tmp, 0)
	if err != nil {
		return err
	}
	fmt.Printf("established loopback TCP connections (both ends in the target), %d runs each, images in %s; times min / median / max\n", *reps, *imgBase)
	fmt.Printf("%-7s %-24s %-24s %-24s\n", "conns", "dump (ms)", "restore (ms)", "dump: repair pass (ms)")
	fmt.Printf("%-7d %-24s %-24s %-24s\n", 0, base[0], base[1], base[2])
	for _, s := range strings.Split(*counts, ",") {
		n, _ := strconv.Atoi(s)
		m, err := measure(cryo, bin, tmp, n)
		if err != nil {
			return fmt.Errorf("%d connections: %w", n, err)
		}
		fmt.Printf("%-7d %-24s %-24s %-24s\n", n, m[0], m[1], m[2])
		per := func(i int) string {
			c, b := m[i].sorted(), base[i].med()
			f := func(v float64) float64 { return (v - b) * 1000 / float64(n) }
			return fmt.Sprintf("%.0f µs (%.0f to %.0f)", f(c[len(c)/2]), f(c[0]), f(c[len(c)-1]))
		}
		fmt.Printf("        per connection, less the connectionless run's median: dump %s, restore %s, repair pass %s\n", per(0), per(1), per(2))
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

var repairRe = regexp.MustCompile(`msg="TCP connections read in repair mode".* took=(\S+)`)

// logged is the duration re finds in the log file, in ms.
func logged(path string, re *regexp.Regexp) float64 {
	b, _ := os.ReadFile(path)
	if m := re.FindSubmatch(b); m != nil {
		d, _ := time.ParseDuration(string(m[1]))
		return ms(d)
	}
	return 0
}

// measure dumps and restores a target holding n connections reps times:
// the dump, the restore and the dump's repair pass.
func measure(cryo, bin, tmp string, n int) ([3]samples, error) {
	var out [3]samples
	flags := []string{"--tcp-established", "--network-lock", "skip", "-v4"}
	for i := 0; i < *reps; i++ {
		dir := filepath.Join(tmp, fmt.Sprintf("run-%d-%d", n, i))
		os.MkdirAll(dir, 0o700)
		log, _ := os.Create(filepath.Join(dir, "target.log"))
		cmd := exec.Command(bin, strconv.Itoa(n))
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
		if b, err := exec.Command(cryo, append([]string{"dump", "-t", strconv.Itoa(pid), "-D", img, "-o", "dump.log"}, flags...)...).CombinedOutput(); err != nil {
			cmd.Process.Kill()
			return out, fmt.Errorf("dump: %v\n%s", err, b)
		}
		out[0] = append(out[0], ms(time.Since(t0)))
		cmd.Wait()
		t0 = time.Now()
		b, err := exec.Command(cryo, append([]string{"restore", "-D", img, "-d", "-o", "restore.log"}, flags...)...).CombinedOutput()
		if err != nil {
			return out, fmt.Errorf("restore: %v\n%s", err, b)
		}
		out[1] = append(out[1], ms(time.Since(t0)))
		out[2] = append(out[2], logged(filepath.Join(img, "dump.log"), repairRe))
		if err := countConns(pid, 2*n); err != nil {
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

// countConns checks that the restored process holds n established
// sockets, each with its 100 unread bytes.
func countConns(pid, n int) error {
	got := 0
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return err
	}
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		cp, err := unix.PidfdGetfd(pfd, fd, 0)
		if err != nil {
			continue
		}
		ti, err := unix.GetsockoptTCPInfo(cp, unix.IPPROTO_TCP, unix.TCP_INFO)
		inq, _ := unix.IoctlGetInt(cp, unix.SIOCINQ)
		unix.Close(cp)
		if err == nil && ti.State == 1 && inq == 100 {
			got++
		}
	}
	if got != n {
		return fmt.Errorf("restored pid %d holds %d established sockets with 100 unread bytes, want %d", pid, got, n)
	}
	return nil
}
