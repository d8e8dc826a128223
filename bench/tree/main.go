// Command tree benchmarks checkpointing process trees (issue 3): dump and
// restore time per process as a tree grows from 10 to 100 to 500 processes
// of 4 MiB each (it must stay linear or better), and a pre-forked server
// (a 200 MiB master and 50 workers sharing it copy-on-write): restore time
// and the tree's PSS before and after.
//
// Run it as root after `make build targets`: go run ./bench/tree
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	repo    = flag.String("repo", ".", "repository root (bin/cryo, bin/targets)")
	imgBase = flag.String("images", "/dev/shm", "where images go")
	sizes   = flag.String("sizes", "10,100,500", "tree sizes")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/tree:", err)
		os.Exit(1)
	}
}

// closeInheritedFds marks every fd above stderr that this process inherited
// close-on-exec, so the targets it starts hold only what they open: cryo
// rightly refuses to dump a pipe whose other end is outside the tree.
func closeInheritedFds() {
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}

func run() error {
	closeInheritedFds()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(*imgBase, "cryo-bench-tree-")
	if err != nil {
		return err
	}
	defer func() {
		if os.Getenv("KEEP") == "" {
			os.RemoveAll(tmp)
		}
	}()
	fanout := filepath.Join(tmp, "fanout")
	if out, err := exec.Command("gcc", "-O2", "-o", fanout, filepath.Join(*repo, "bench", "tree", "targets", "fanout.c")).CombinedOutput(); err != nil {
		return fmt.Errorf("gcc: %v\n%s", err, out)
	}
	cryo := filepath.Join(*repo, "bin", "cryo")

	fmt.Println("Process trees, 4 MiB of private memory per process, images in", *imgBase)
	fmt.Printf("%-10s %14s %14s %16s %16s\n", "processes", "dump (ms)", "restore (ms)", "dump/process", "restore/process")
	var first [2]float64
	var last [2]float64
	var firstN, lastN int
	for i, s := range strings.Split(*sizes, ",") {
		n, _ := strconv.Atoi(s)
		d, r, err := cycle(cryo, tmp, []string{fanout, strconv.Itoa(n), "4"}, n, nil)
		if err != nil {
			return fmt.Errorf("%d processes: %w", n, err)
		}
		pd, pr := ms(d)/float64(n), ms(r)/float64(n)
		fmt.Printf("%-10d %14.1f %14.1f %16.2f %16.2f\n", n, ms(d), ms(r), pd, pr)
		if i == 0 {
			first, firstN = [2]float64{pd, pr}, n
		}
		last, lastN = [2]float64{pd, pr}, n
	}
	fmt.Printf("growth of the time per process from %d to %d processes: dump %.2fx, restore %.2fx (1.0 = linear)\n\n",
		firstN, lastN, last[0]/first[0], last[1]/first[1])

	prefork := filepath.Join(*repo, "bin", "targets", "prefork")
	var pss [2]int
	_, r, err := cycle(cryo, tmp, []string{prefork, "", "200", "50"}, 51, &pss)
	if err != nil {
		return fmt.Errorf("prefork: %w", err)
	}
	fmt.Printf("Pre-forked server, 200 MiB master + 50 workers: restore %.1f ms; PSS before %d MiB, after %d MiB (%.2fx)\n",
		ms(r), pss[0]>>10, pss[1]>>10, float64(pss[1])/float64(pss[0]))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cycle starts a tree, dumps it, restores it detached, and kills it; it
// returns the wall time of the two cryo commands. With pss set it measures
// the tree's PSS before the dump and after the restore.
func cycle(cryo, tmp string, argv []string, n int, pss *[2]int) (time.Duration, time.Duration, error) {
	logf, err := os.Create(filepath.Join(tmp, "target.log"))
	if err != nil {
		return 0, 0, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	root := cmd.Process.Pid
	defer killTree(root)
	if err := waitReady(logf.Name(), 60*time.Second); err != nil {
		return 0, 0, err
	}
	if got := len(treePids(root)); got != n {
		return 0, 0, fmt.Errorf("tree has %d processes, want %d", got, n)
	}
	if pss != nil {
		time.Sleep(200 * time.Millisecond)
		pss[0] = treePss(root)
	}
	img := filepath.Join(tmp, "img")
	os.RemoveAll(img)
	t0 := time.Now()
	if out, err := exec.Command(cryo, "dump", "-t", strconv.Itoa(root), "-D", img, "-v4", "-o", filepath.Join(tmp, fmt.Sprintf("dump-%d.log", n))).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("dump: %v\n%s", err, out)
	}
	dumpTime := time.Since(t0)
	cmd.Wait()
	reapAll()
	t0 = time.Now()
	if out, err := exec.Command(cryo, "restore", "-D", img, "-d").CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("restore: %v\n%s", err, out)
	}
	restoreTime := time.Since(t0)
	if pss != nil {
		pss[1] = treePss(root)
	}
	if got := len(treePids(root)); got != n {
		return 0, 0, fmt.Errorf("restored tree has %d processes, want %d", got, n)
	}
	os.RemoveAll(img)
	return dumpTime, restoreTime, nil
}

func waitReady(log string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		f, err := os.Open(log)
		if err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if sc.Text() == "READY" {
					f.Close()
					return nil
				}
			}
			f.Close()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("target not ready within %v", d)
}

func treePids(root int) []int {
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", root)); err != nil {
		return nil
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", out[i]))
		for _, task := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", out[i], task.Name()))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					out = append(out, pid)
				}
			}
		}
	}
	return out
}

func treePss(root int) int {
	total := 0
	for _, pid := range treePids(root) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
				n, _ := strconv.Atoi(f[1])
				total += n
			}
		}
	}
	return total
}

// killTree kills a tree the bench started, by pid, children first, and
// reaps what it can.
func killTree(root int) {
	pids := treePids(root)
	for i := len(pids) - 1; i >= 0; i-- {
		unix.Kill(pids[i], unix.SIGKILL)
	}
	time.Sleep(50 * time.Millisecond)
	reapAll()
}

func reapAll() {
	for i := 0; i < 100000; i++ {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err != nil || pid <= 0 {
			if pid == 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			return
		}
	}
}
