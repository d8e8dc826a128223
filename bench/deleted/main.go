// Command deleted measures the CPU time `cryo deleted` takes on a machine
// with many processes and mappings:
//
//	go run ./bench/deleted [-procs 2000] [-maps 50] [-runs 5]
//
// It starts -procs copies of test/targets/inspect_many, each with about -maps
// mappings (files shared by all, anonymous regions, and in every fourth a
// deleted file of its own), runs bin/cryo deleted -runs times and reports
// the user+system CPU time of each run from getrusage (wait4), then kills
// every process it started, by pid, and reaps it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	procs := flag.Int("procs", 2000, "processes to start")
	maps := flag.Int("maps", 50, "mappings per process")
	runs := flag.Int("runs", 5, "runs of cryo deleted")
	flag.Parse()
	if err := run(*procs, *maps, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench/deleted:", err)
		os.Exit(1)
	}
}

func run(nprocs, nmaps, runs int) error {
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	if out, err := exec.Command("make", "-C", repo, "build", "bin/targets/inspect_many").CombinedOutput(); err != nil {
		return fmt.Errorf("make: %w\n%s", err, out)
	}
	dir, err := os.MkdirTemp("", "cryo-bench-deleted-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for i := range 16 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("shared-%02d", i)), bytes.Repeat([]byte{byte(i)}, 64<<10), 0o600); err != nil {
			return err
		}
	}

	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	var cmds []*exec.Cmd
	// Kill everything we started, by pid, however we leave.
	cleanup := func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
		}
		for _, c := range cmds {
			_ = c.Wait()
		}
		cmds = nil
	}
	defer cleanup()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		cleanup()
		os.Exit(1)
	}()

	t0 := time.Now()
	prog := filepath.Join(repo, "bin", "targets", "inspect_many")
	for i := range nprocs {
		c := exec.Command(prog, dir, strconv.Itoa(i), strconv.Itoa(nmaps))
		c.Stdout = pw
		if err := c.Start(); err != nil {
			return fmt.Errorf("start process %d: %w", i, err)
		}
		cmds = append(cmds, c)
	}
	pw.Close()
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		n := 0
		for sc.Scan() {
			if n++; n == nprocs {
				ready <- nil
				return
			}
		}
		ready <- fmt.Errorf("only %d of %d processes became ready", n, nprocs)
	}()
	select {
	case err := <-ready:
		if err != nil {
			return err
		}
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("processes not ready after 2 minutes")
	}
	total := 0
	for _, c := range cmds {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", c.Process.Pid))
		if err != nil {
			return err
		}
		total += bytes.Count(b, []byte{'\n'})
	}
	fmt.Printf("started %d processes with %d mappings in all (%.1f each) in %v; %d hold a deleted file\n",
		nprocs, total, float64(total)/float64(nprocs), time.Since(t0).Round(time.Millisecond), (nprocs+3)/4)

	cryo := filepath.Join(repo, "bin", "cryo")
	var cpu []time.Duration
	for i := range runs {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c := exec.CommandContext(ctx, cryo, "deleted", "--json")
		var out bytes.Buffer
		c.Stdout = &out
		c.Stderr = os.Stderr
		start := time.Now()
		err := c.Run()
		wall := time.Since(start)
		cancel()
		if err != nil {
			return fmt.Errorf("cryo deleted: %w", err)
		}
		ru := c.ProcessState.SysUsage().(*syscall.Rusage)
		user := time.Duration(ru.Utime.Nano())
		sys := time.Duration(ru.Stime.Nano())
		cpu = append(cpu, user+sys)
		found := strings.Count(out.String(), `"kind": "file"`)
		fmt.Printf("run %d: cpu %v (user %v + sys %v), wall %v, %d deleted files reported\n",
			i+1, (user + sys).Round(time.Millisecond), user.Round(time.Millisecond), sys.Round(time.Millisecond), wall.Round(time.Millisecond), found)
	}
	// No process may have been stopped or traced.
	for _, c := range cmds {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		if i := bytes.LastIndexByte(b, ')'); i < 0 || i+2 >= len(b) || b[i+2] == 't' || b[i+2] == 'T' {
			return fmt.Errorf("pid %d stopped or gone: %q", c.Process.Pid, b)
		}
	}
	sort.Slice(cpu, func(i, j int) bool { return cpu[i] < cpu[j] })
	fmt.Printf("cryo deleted, %d processes, %d mappings: CPU (user+sys) min %v, median %v, max %v\n",
		nprocs, total, cpu[0].Round(time.Millisecond), cpu[len(cpu)/2].Round(time.Millisecond), cpu[len(cpu)-1].Round(time.Millisecond))
	return nil
}
