package feature

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain fails the run if a probe leaked a file descriptor or left a
// child process (a stub, or a child a stub forked) behind.
func TestMain(m *testing.M) {
	// Open a pollable file once, so the runtime's netpoller fds exist
	// before the baseline is taken.
	if f, err := os.Open(os.DevNull); err == nil {
		f.Close()
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
	if kids := children(); len(kids) > 0 {
		fmt.Fprintf(os.Stderr, "child processes left behind: %v\n", kids)
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

// children lists the processes whose parent is this one (zombies included).
func children() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 {
			if ppid, _ := strconv.Atoi(f[1]); ppid == os.Getpid() {
				out = append(out, pid)
			}
		}
	}
	return out
}

// kernelVersion is the running kernel's major.minor, for tests only:
// probes never look at it.
func kernelVersion(t *testing.T) [2]int {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	v, err := parseVersion(unix.ByteSliceToString(uts.Release[:]))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func parseVersion(s string) ([2]int, error) {
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		return [2]int{}, fmt.Errorf("version %q", s)
	}
	maj, err1 := strconv.Atoi(parts[0])
	minor := parts[1]
	if i := strings.IndexFunc(minor, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = minor[:i]
	}
	min, err2 := strconv.Atoi(minor)
	if err1 != nil || err2 != nil {
		return [2]int{}, fmt.Errorf("version %q", s)
	}
	return [2]int{maj, min}, nil
}

func atLeast(have [2]int, want string) bool {
	w, err := parseVersion(want)
	if err != nil {
		panic(err)
	}
	return have[0] > w[0] || (have[0] == w[0] && have[1] >= w[1])
}

// kernelConfig reads /proc/config.gz; nil if the kernel does not offer it.
func kernelConfig(t *testing.T) map[string]string {
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return nil
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]string{}
	sc := bufio.NewScanner(z)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "CONFIG_") {
			cfg[k] = v
		}
	}
	return cfg
}

// TestProbes runs every probe on this machine. Like cilium's
// SkipIfNotSupported, "not supported" on a kernel new enough (and built
// with the options the feature needs, when /proc/config.gz says) fails the
// test instead of skipping it, so a broken probe cannot hide; and a probe
// that claims support the kernel's config rules out fails too.
func TestProbes(t *testing.T) {
	kv := kernelVersion(t)
	cfg := kernelConfig(t)
	root := os.Geteuid() == 0
	for _, p := range Probes {
		t.Run(p.Name, func(t *testing.T) {
			detail, err := p.Result()
			t.Logf("%s: %s %v", StatusOf(err), detail, err)
			configured, known := true, cfg != nil
			if p.Config != "" {
				for _, opt := range strings.Split(p.Config, ", ") {
					if cfg[opt] != "y" {
						configured = false
					}
				}
			}
			switch StatusOf(err) {
			case ProbeError:
				t.Fatalf("probe could not tell: %v", err)
			case NotPermitted:
				if root {
					t.Fatalf("root, yet: %v", err)
				}
				t.Skipf("not root: %v", err)
			case Unsupported:
				if p.MinKernel != "" && !atLeast(kv, p.MinKernel) {
					t.Skipf("kernel %d.%d is older than %s", kv[0], kv[1], p.MinKernel)
				}
				if p.Config != "" && !known {
					t.Skipf("no /proc/config.gz to tell whether %s is built in", p.Config)
				}
				if !configured {
					return // rightly absent
				}
				t.Fatalf("kernel %d.%d is new enough and configured, yet: %v", kv[0], kv[1], err)
			case Supported:
				if p.Config != "" && known && !configured {
					t.Fatalf("claims support, but the kernel lacks one of %s", p.Config)
				}
			}
		})
	}
}

// TestCache checks that conclusive outcomes are cached and others are not.
func TestCache(t *testing.T) {
	for _, c := range []struct {
		err    error
		cached bool
	}{
		{nil, true},
		{fmt.Errorf("%w: x", ErrNotSupported), true},
		{fmt.Errorf("%w: x", ErrNotPermitted), true},
		{errors.New("could not tell"), false},
	} {
		calls := 0
		p := &Probe{Name: "t", MinKernel: "1.0", fn: func() (string, error) { calls++; return "", c.err }}
		err1, err2 := p.Check(), p.Check()
		if StatusOf(err1) != StatusOf(c.err) || StatusOf(err2) != StatusOf(c.err) {
			t.Errorf("%v: Check gave %v then %v", c.err, err1, err2)
		}
		if want := map[bool]int{true: 1, false: 2}[c.cached]; calls != want {
			t.Errorf("%v: probe ran %d times, want %d", c.err, calls, want)
		}
	}
	err := (&Probe{Name: "t", MinKernel: "5.13", fn: func() (string, error) {
		return "", fmt.Errorf("%w: x", ErrNotSupported)
	}}).Check()
	if !strings.Contains(err.Error(), "Linux 5.13") {
		t.Errorf("not-supported error does not name the kernel version: %v", err)
	}
}

// TestSpeed checks `cryo check` stays well under its 300 ms budget.
func TestSpeed(t *testing.T) {
	for _, p := range Probes {
		p.forget()
	}
	start := time.Now()
	reports := RunAll()
	total := time.Since(start)
	sort.Slice(reports, func(i, j int) bool { return reports[i].Micros > reports[j].Micros })
	for _, r := range reports[:5] {
		t.Logf("%-24s %6d µs", r.Name, r.Micros)
	}
	t.Logf("all %d probes: %v", len(reports), total)
	if total > 300*time.Millisecond {
		t.Errorf("probes took %v, budget 300ms", total)
	}
}

func TestFreePid(t *testing.T) {
	p, err := freePid(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(p)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("freePid gave %d, which exists", p)
	}
}

func TestLookup(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range Probes {
		if seen[p.Name] {
			t.Errorf("probe %s listed twice", p.Name)
		}
		seen[p.Name] = true
		if Lookup(p.Name) != p {
			t.Errorf("Lookup(%s) is another probe", p.Name)
		}
		if p.Description == "" || p.NeededFor == "" {
			t.Errorf("probe %s lacks a description or needed-for text", p.Name)
		}
	}
	if Lookup("nope") != nil {
		t.Error("Lookup of an unknown name")
	}
}

func TestReportText(t *testing.T) {
	reports := []*Report{Run(PidMax), Run(SoftDirty)}
	var b bytes.Buffer
	if err := WriteText(&b, Summarize(reports)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"pid_max", "✓", "soft_dirty", "✗", "cryo can dump: yes; restore: yes", "CAP_CHECKPOINT_RESTORE"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if Can([]*Report{Run(Capabilities), {Name: Clone3SetTid.Name, Status: Unsupported}}, ForRestore) {
		t.Error("restore judged possible without clone3_set_tid")
	}
}
