// Command bench measures cryo against in-process baselines taken in the
// same run, and prints ratios: this machine is shared and noisy, so
// absolute times mean little. See bench/README.md for each figure.
//
//	go run ./bench [-o results.json] [-size 1024] [-vmas 10000] [-reps 3] [-phases big,sparse,vmas] [-profile]
//
// It needs root, gcc, and bin/cryo (built with make build unless -cryo
// names a binary or -nobuild is given).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

type config struct {
	sizeMiB int
	vmas    int
	reps    int
	out     string
	cryo    string
	noBuild bool
	shm     string
	profile bool
	keep    bool
	phases  map[string]bool
}

// env is what every phase uses.
type env struct {
	cfg   config
	repo  string
	cryo  string // bin/cryo
	mem   string // the compiled target
	spawn string // the compiled spawn helper
	tmp   string // target and cryo output, the target binary
	shm   string // image directories and baseline files
	base  *baselines
}

func main() {
	var cfg config
	flag.IntVar(&cfg.sizeMiB, "size", 1024, "MiB of anonymous memory of the big targets")
	flag.IntVar(&cfg.vmas, "vmas", 10000, "VMAs of the many-VMA target")
	flag.IntVar(&cfg.reps, "reps", 3, "measured repetitions (after one warm-up run)")
	flag.StringVar(&cfg.out, "o", "", "also write the results as JSON to this file")
	flag.StringVar(&cfg.cryo, "cryo", "", "cryo binary (default: make build, then bin/cryo)")
	flag.BoolVar(&cfg.noBuild, "nobuild", false, "use bin/cryo as it is, do not run make build")
	flag.StringVar(&cfg.shm, "dir", "/dev/shm", "directory for images and baseline files")
	flag.BoolVar(&cfg.profile, "profile", false, "after measuring, run one logged (-v4) dump and restore of the big target and print their stage times")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directories")
	phases := flag.String("phases", "big,sparse,vmas", "comma-separated phases to run: big (figures 1, 3, 4, 5f), sparse (2), vmas (5d, 5z, 5r)")
	flag.Parse()
	cfg.phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		switch p {
		case "big", "sparse", "vmas":
			cfg.phases[p] = true
		default:
			fmt.Fprintf(os.Stderr, "bench: unknown phase %q (big, sparse, vmas)\n", p)
			os.Exit(2)
		}
	}
	if err := run(cfg); err != nil {
		killLive()
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func run(cfg config) error {
	closeInheritedFds()
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (ptrace of the targets, clone3 with set_tid)")
	}
	if cfg.reps < 1 || cfg.sizeMiB < 16 || cfg.vmas < 2 {
		return fmt.Errorf("bad -reps, -size or -vmas")
	}
	if err := setSubreaper(); err != nil {
		return fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err)
	}
	repo, err := findRepo()
	if err != nil {
		return err
	}
	e := &env{cfg: cfg, repo: repo}
	if e.cryo, err = findCryo(cfg, repo); err != nil {
		return err
	}
	if e.tmp, err = os.MkdirTemp("", "cryo-bench-"); err != nil {
		return err
	}
	if e.shm, err = os.MkdirTemp(cfg.shm, "cryo-bench-"); err != nil {
		return err
	}
	cleanup := func() {
		killLive()
		if !cfg.keep {
			os.RemoveAll(e.shm)
			os.RemoveAll(e.tmp)
		}
	}
	defer cleanup()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		cleanup()
		fmt.Fprintln(os.Stderr, "bench: interrupted by", s)
		os.Exit(130)
	}()

	e.mem = filepath.Join(e.tmp, "mem")
	e.spawn = filepath.Join(e.tmp, "spawn")
	for _, bin := range []string{e.mem, e.spawn} {
		src := filepath.Join(repo, "bench", "targets", filepath.Base(bin)+".c")
		if out, err := exec.Command("gcc", "-O2", "-Wall", "-Werror", "-o", bin, src).CombinedOutput(); err != nil {
			return fmt.Errorf("gcc %s: %v\n%s", src, err, out)
		}
	}
	if e.base, err = newBaselines(); err != nil {
		return err
	}

	start := time.Now()
	rep := &report{
		Cryo:    e.cryo,
		Kernel:  kernel(),
		CPUs:    runtime.NumCPU(),
		Dir:     cfg.shm,
		SizeMiB: cfg.sizeMiB,
		VMAs:    cfg.vmas,
		Reps:    cfg.reps,
		Date:    start.UTC().Format(time.RFC3339),
		Samples: map[string][]float64{},
	}
	for _, ph := range []struct {
		name string
		run  func(*report) error
	}{{"big", e.bigTarget}, {"sparse", e.sparseTargets}, {"vmas", e.vmaTargets}} {
		if cfg.phases[ph.name] {
			if err := ph.run(rep); err != nil {
				return err
			}
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	rep.print(os.Stdout)
	if cfg.out != "" {
		if err := rep.writeJSON(cfg.out); err != nil {
			return err
		}
	}
	if cfg.profile {
		if err := e.profile(); err != nil {
			return err
		}
	}
	return nil
}

// findCryo returns the cryo binary to measure, building bin/cryo first
// unless told otherwise.
func findCryo(cfg config, repo string) (string, error) {
	if cfg.cryo != "" {
		return filepath.Abs(cfg.cryo)
	}
	bin := filepath.Join(repo, "bin", "cryo")
	if !cfg.noBuild {
		if out, err := exec.Command("make", "-C", repo, "build").CombinedOutput(); err != nil {
			if _, serr := os.Stat(bin); serr != nil {
				return "", fmt.Errorf("make build: %v\n%s", err, out)
			}
			logf("make build failed, measuring the existing %s: %v\n%s", bin, err, out)
		}
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s: %w (run make build)", bin, err)
	}
	return bin, nil
}

func kernel() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return ""
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// profile runs one more dump and restore of the big target with -v4 logs
// and prints what they say about where the time goes.
func (e *env) profile() error {
	pages := e.cfg.sizeMiB << 20 / pageSize
	t, err := startTarget(e.tmp, e.mem, "all", fmt.Sprint(pages))
	if err != nil {
		return err
	}
	defer t.kill()
	img := filepath.Join(e.shm, "profile")
	if _, err := e.runCryo("dump", "-t", fmt.Sprint(t.pid), "-D", img, "-v4", "-o", "dump.log"); err != nil {
		return err
	}
	if err := t.waitGone(); err != nil {
		return err
	}
	if _, err := e.runCryo("restore", "-D", img, "-d", "-v4", "-o", "restore.log"); err != nil {
		return err
	}
	track(t.pid, t.bin)
	if err := t.killRestored(); err != nil {
		return err
	}
	fmt.Println()
	for _, l := range []string{"dump.log", "restore.log"} {
		b, err := os.ReadFile(filepath.Join(img, l))
		if err != nil {
			return err
		}
		fmt.Printf("%s (timed lines):\n", l)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "took=") || strings.Contains(line, "frozen=") {
				fmt.Println("  " + line)
			}
		}
	}
	return os.RemoveAll(img)
}
