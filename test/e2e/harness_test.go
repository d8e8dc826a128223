// Package e2e checkpoints and restores real processes with bin/cryo and lets
// them prove that their state survived.
//
// Each target (test/targets/) sets its state up, prints READY, and on a
// trigger file checks everything it recorded, printing PASS/FAIL lines and
// exiting 0 only if all passed; see test/targets/common.h for the protocol.
// The tests need root (ptrace of any process, clone3 with set_tid).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/imageset"
)

var (
	repo     string // repository root (where go.mod is)
	cryoBin  string // bin/cryo
	buildErr error  // why bin/cryo or the targets could not be built
)

const (
	readyTimeout   = 10 * time.Second
	dumpTimeout    = 60 * time.Second
	restoreTimeout = 30 * time.Second
	exitTimeout    = 10 * time.Second
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	repo, err = findRepo()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	cryoBin = filepath.Join(repo, "bin", "cryo")
	closeInheritedFds()
	if err := makeStateHook(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(filepath.Dir(stateHook))
	if os.Geteuid() == 0 {
		buildErr = build()
		// Orphans (processes restored with -d, which cryo leaves behind)
		// are re-parented to this test process, which can then reap them
		// and see how they died.
		if err := setSubreaper(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: PR_SET_CHILD_SUBREAPER:", err)
			return 1
		}
	}
	return m.Run()
}

// closeInheritedFds marks every fd above stderr that this test process
// inherited (a terminal multiplexer's or CI runner's pipes) close-on-exec:
// Go only sets that flag on the fds it opens itself, and a stray fd in a
// target would be dumped as if it were the target's own.
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

// build runs make once for bin/cryo and the C targets, and go build for the
// Go target. make is incremental, so this is cheap when nothing changed.
func build() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var errs []error
	if out, err := exec.CommandContext(ctx, "make", "-C", repo, "targets").CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("make targets: %w\n%s", err, out))
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(repo, "bin", "targets", "gothreads"), "./test/targets/gothreads")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("go build gothreads: %w\n%s", err, out))
	}
	if out, err := exec.CommandContext(ctx, "make", "-C", repo, "build").CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("make build (bin/cryo): %w\n%s", err, out))
	}
	return errors.Join(errs...)
}

// useraddNameInUse is useradd's exit status for a name already taken
// (useradd(8), EXIT VALUES).
const useraddNameInUse = 9

// addSystemUser creates name as a system user without a home or a login
// shell. A name that is already taken is fine: another test, or an
// earlier run, made it. That is told by useradd's exit status, not by
// its message, which is translated and reworded between versions.
func addSystemUser(t *testing.T, name string) {
	t.Helper()
	out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
	if ee := (*exec.ExitError)(nil); err != nil && !(errors.As(err, &ee) && ee.ExitCode() == useraddNameInUse) {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
}

func setSubreaper() error { return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e tests need root (ptrace of any process, clone3 with set_tid); run as root")
	}
}

// requireCryo skips nothing: a cryo that does not build is a failure.
func requireCryo(t *testing.T) {
	t.Helper()
	requireRoot(t)
	if buildErr != nil {
		t.Fatalf("build failed: %v", buildErr)
	}
}

// targetCmd is how a target is started, without its trigger argument.
func targetCmd(name string) []string {
	switch name {
	case "pyjob", "pylocks", "unlinked", "unixclient", "udpq":
		py := "/usr/bin/python3"
		if _, err := os.Stat(py); err != nil {
			py = "python3"
		}
		return []string{py, filepath.Join(repo, "test", "targets", name+".py")}
	case "pipeline":
		// A real shell pipeline; its trigger path comes as $2.
		return []string{"/bin/sh", "-c", `"$1" produce | "$1" consume "$2"`, "sh", filepath.Join(repo, "bin", "targets", "pipeline")}
	case "pipeline-setsid":
		// The same, with the producer leading a session of its own, so
		// that it can be dumped alone without --shell-job.
		return []string{"/bin/sh", "-c", `setsid "$1" produce | "$1" consume "$2"`, "sh", filepath.Join(repo, "bin", "targets", "pipeline")}
	default:
		return []string{filepath.Join(repo, "bin", "targets", name)}
	}
}

// target is one started test target.
type target struct {
	t       *testing.T
	name    string
	dir     string
	trigger string
	logPath string
	cmd     *exec.Cmd
	pid     int
	tids    map[string]int // TID lines: thread name → tid
	kids    map[string]int // CHILD lines: child name → pid

	done    chan struct{} // closed once the original process is reaped
	state   *os.ProcessState
	waitErr error
}

// startTarget starts test/targets NAME with its trigger in a fresh temp dir, in
// a new session, stdin from /dev/null and stdout+stderr appended to a log, and
// waits for READY.
func startTarget(t *testing.T, name string, args ...string) *target {
	t.Helper()
	tg := startTargetNoWait(t, name, args...)
	tg.waitReady()
	return tg
}

func startTargetNoWait(t *testing.T, name string, args ...string) *target {
	t.Helper()
	return startTargetAs(t, nil, name, args...)
}

// startTargetAs is startTargetNoWait with the target's credentials set
// (nil: the test's own).
func startTargetAs(t *testing.T, cred *syscall.Credential, name string, args ...string) *target {
	t.Helper()
	return startTargetAttr(t, &syscall.SysProcAttr{Setsid: true, Credential: cred}, name, args...)
}

// startTargetAttr starts a target with attr (which should have Setsid:
// each target leads its own session), without waiting for it.
func startTargetAttr(t *testing.T, attr *syscall.SysProcAttr, name string, args ...string) *target {
	t.Helper()
	dir := t.TempDir()
	tg := &target{
		t:       t,
		name:    name,
		dir:     dir,
		trigger: filepath.Join(dir, "trigger"),
		logPath: filepath.Join(dir, name+".log"),
		tids:    map[string]int{},
		kids:    map[string]int{},
		done:    make(chan struct{}),
	}
	logf, err := os.OpenFile(tg.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	argv := append(targetCmd(name), tg.trigger)
	argv = append(argv, args...)
	tg.cmd = exec.Command(argv[0], argv[1:]...)
	tg.cmd.Stdout, tg.cmd.Stderr = logf, logf
	tg.cmd.SysProcAttr = attr
	if err := tg.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	tg.pid = tg.cmd.Process.Pid
	go func() {
		tg.waitErr = tg.cmd.Wait()
		tg.state = tg.cmd.ProcessState
		close(tg.done)
	}()
	t.Cleanup(func() {
		// Kill only what this test started: our own unreaped child (its
		// pid cannot have been reused while unreaped)...
		// A target may be a tree: its descendants are ours too, and would
		// outlive it (re-parented) if only the root were killed.
		kids := treePids(tg.pid)
		for i := len(kids) - 1; i > 0; i-- {
			if runsTarget(kids[i], tg.name) || strings.Contains(readCmdline(kids[i]), tg.dir) {
				_ = syscall.Kill(kids[i], syscall.SIGKILL)
			}
		}
		select {
		case <-tg.done:
		default:
			_ = tg.cmd.Process.Kill()
			select {
			case <-tg.done:
			case <-time.After(exitTimeout):
				t.Errorf("%s pid %d did not die after SIGKILL", name, tg.pid)
			}
		}
		// ...or a restored process with the same pid running the same
		// program (restored processes are not our children).
		killRestored(t, tg.pid, tg.name)
		if t.Failed() {
			tg.dumpLog()
		}
	})
	return tg
}

func (tg *target) log() string {
	b, _ := os.ReadFile(tg.logPath)
	return string(b)
}

func (tg *target) dumpLog() {
	tg.t.Logf("--- %s log (%s) ---\n%s", tg.name, tg.logPath, tg.log())
}

// waitReady waits for the READY line and records the PID/TID/CHILD lines
// before it.
func (tg *target) waitReady() {
	t := tg.t
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		log := tg.log()
		if i := strings.Index(log, "READY\n"); i >= 0 {
			for _, line := range strings.Split(log[:i], "\n") {
				f := strings.Fields(line)
				if len(f) == 3 && f[0] == "TID" {
					tg.tids[f[1]], _ = strconv.Atoi(f[2])
				}
				if len(f) == 3 && f[0] == "CHILD" {
					tg.kids[f[1]], _ = strconv.Atoi(f[2])
				}
				if len(f) == 2 && f[0] == "PID" {
					if p, _ := strconv.Atoi(f[1]); p != tg.pid {
						t.Fatalf("%s reports pid %d, started as %d", tg.name, p, tg.pid)
					}
				}
			}
			return
		}
		select {
		case <-tg.done:
			// It may have printed READY just before exiting: look again.
			if log = tg.log(); !strings.Contains(log, "READY\n") {
				t.Fatalf("%s exited before READY (%v):\n%s", tg.name, tg.waitErr, log)
			}
			continue
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no READY within %v:\n%s", tg.name, readyTimeout, log)
		}
	}
}

func (tg *target) fire() {
	tg.t.Helper()
	if err := os.WriteFile(tg.trigger, nil, 0o600); err != nil {
		tg.t.Fatal(err)
	}
}

// waitExit waits for the original process to exit by itself.
func (tg *target) waitExit(d time.Duration) (*os.ProcessState, bool) {
	select {
	case <-tg.done:
		return tg.state, true
	case <-time.After(d):
		return nil, false
	}
}

// expectKilled asserts that the original process was killed by SIGKILL (what
// cryo dump does without --leave-running) and has been reaped.
func (tg *target) expectKilled() {
	t := tg.t
	t.Helper()
	st, ok := tg.waitExit(exitTimeout)
	if !ok {
		t.Fatalf("%s pid %d still alive %v after a dump without --leave-running (state %s)", tg.name, tg.pid, exitTimeout, procState(tg.pid))
	}
	ws := st.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%s pid %d ended with %v, want SIGKILL", tg.name, tg.pid, st)
	}
}

// expectPassed triggers nothing: it checks an exit status and the log of a
// verify phase that already ran.
// expectUnharmed checks, after a dump that failed or was refused (what),
// that the target runs on, not stopped, then lets it finish its checks
// (10 s at most), which must all pass.
func (tg *target) expectUnharmed(what string) {
	t := tg.t
	t.Helper()
	expectAliveUnstopped(t, tg.pid, what)
	tg.fire()
	st, ok := tg.waitExit(10 * time.Second)
	if !ok {
		t.Fatal("target did not finish its checks within 10 s")
	}
	tg.expectPassed(st.ExitCode(), "after the refused dump")
}

func (tg *target) expectPassed(code int, what string) {
	t := tg.t
	t.Helper()
	log := tg.log()
	var fails []string
	passes := 0
	for _, line := range strings.Split(log, "\n") {
		switch {
		case strings.HasPrefix(line, "FAIL "):
			fails = append(fails, line)
		case strings.HasPrefix(line, "PASS "):
			passes++
		}
	}
	if len(fails) > 0 {
		t.Errorf("%s: %s: %d check(s) failed:\n%s", tg.name, what, len(fails), strings.Join(fails, "\n"))
	}
	if passes == 0 {
		t.Errorf("%s: %s: no PASS line: the verify phase did not run", tg.name, what)
	}
	want := fmt.Sprintf("VERIFY pid=%d", tg.pid)
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "VERIFY pid=") && line != want {
			t.Errorf("%s: %s: %q, want %q", tg.name, what, line, want)
		}
	}
	if code != 0 {
		t.Errorf("%s: %s: exit status %d, want 0", tg.name, what, code)
	}
}

// expectAliveUnstopped asserts that every thread of pid exists and is not
// stopped or traced, waiting a bounded moment for a detach to settle.
func expectAliveUnstopped(t *testing.T, pid int, what string) {
	t.Helper()
	var bad string
	for deadline := time.Now().Add(2 * time.Second); ; {
		bad = stoppedThreads(pid)
		if bad == "" {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: pid %d: %s", what, pid, bad)
}

// stoppedThreads returns "" if pid exists and none of its threads is stopped
// (t/T) or traced, else what is wrong.
func stoppedThreads(pid int) string {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Sprintf("gone: %v", err)
	}
	var bad []string
	for _, e := range ents {
		st := taskState(pid, e.Name())
		if st == "t" || st == "T" {
			bad = append(bad, fmt.Sprintf("thread %s state %s", e.Name(), st))
		}
		if tp := tracerPid(pid, e.Name()); tp != 0 {
			bad = append(bad, fmt.Sprintf("thread %s traced by %d", e.Name(), tp))
		}
	}
	return strings.Join(bad, ", ")
}

// parkedThreads counts the threads of pid that a dump holds parked: in
// a clock_nanosleep made from the [vdso] (the return trampoline), which
// no program calls from there.
func parkedThreads(pid int) int {
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0
	}
	var lo, hi uint64
	for _, l := range strings.Split(string(maps), "\n") {
		if strings.HasSuffix(l, "[vdso]") {
			fmt.Sscanf(l, "%x-%x", &lo, &hi)
		}
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, e.Name()))
		f := strings.Fields(string(b))
		if err != nil || len(f) != 9 || f[0] != strconv.Itoa(unix.SYS_CLOCK_NANOSLEEP) {
			continue
		}
		if pc, err := strconv.ParseUint(strings.TrimPrefix(f[8], "0x"), 16, 64); err == nil && pc >= lo && pc < hi {
			n++
		}
	}
	return n
}

func taskState(pid int, tid string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, tid))
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return "?"
}

func tracerPid(pid int, tid string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, tid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

func procState(pid int) string {
	st := taskState(pid, strconv.Itoa(pid))
	if st == "" {
		return "gone"
	}
	return st
}

// runsTarget reports whether pid exists and runs target name (by its
// cmdline), so that a pid is never killed by number unless it is ours.
func runsTarget(pid int, name string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	for _, a := range args[:min(len(args), 2)] {
		if filepath.Base(a) == name || filepath.Base(a) == name+".py" {
			return true
		}
	}
	return false
}

// killRestored kills and reaps a restored copy of a target by its pid.
func killRestored(t *testing.T, pid int, name string) {
	if !runsTarget(pid, name) {
		reapIfChild(pid)
		return
	}
	kids := treePids(pid) // a restored tree: its descendants first
	for i := len(kids) - 1; i > 0; i-- {
		if runsTarget(kids[i], name) {
			_ = syscall.Kill(kids[i], syscall.SIGKILL)
		}
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(exitTimeout); time.Now().Before(deadline); {
		if reapIfChild(pid) || !runsTarget(pid, name) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("restored %s pid %d survived SIGKILL (state %s)", name, pid, procState(pid))
}

// reapIfChild reaps pid if it is a zombie child of ours (an orphan
// re-parented to us as subreaper); it reports whether pid is gone.
func reapIfChild(pid int) bool {
	var ws syscall.WaitStatus
	got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	if got == pid {
		return true
	}
	if errors.Is(err, syscall.ECHILD) {
		_, statErr := os.Stat(fmt.Sprintf("/proc/%d", pid))
		return statErr != nil
	}
	return false
}

// errStillRunning is what waitReaped returns when pid did not exit in time.
var errStillRunning = errors.New("still running")

// waitReaped waits for pid, a child of ours by subreaping, to exit, and
// returns its wait status; errStillRunning if it did not exit within d,
// or wait4's error (ECHILD: not our child).
func waitReaped(pid int, d time.Duration) (syscall.WaitStatus, error) {
	deadline := time.Now().Add(d)
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG|syscall.WALL, nil)
		if got == pid {
			return ws, nil
		}
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("pid %d %w after %v (state %s)", pid, errStillRunning, d, procState(pid))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cryoResult is what one run of bin/cryo did.
type cryoResult struct {
	args     []string
	output   string // stdout and stderr
	code     int    // exit status; -1 if killed or timed out
	timedOut bool
	dur      time.Duration
}

func (r *cryoResult) String() string {
	return fmt.Sprintf("cryo %s: exit %d after %v (timed out: %v)\n%s", strings.Join(r.args, " "), r.code, r.dur.Round(time.Millisecond), r.timedOut, r.output)
}

// cryoProc is a running bin/cryo.
type cryoProc struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	res  *cryoResult
	t0   time.Time
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startCryo(t *testing.T, args ...string) *cryoProc {
	t.Helper()
	return startCryoAs(t, nil, args...)
}

// startCryoAs runs bin/cryo with the given credentials (nil: the test's).
func startCryoAs(t *testing.T, cred *syscall.Credential, args ...string) *cryoProc {
	t.Helper()
	return startCryoFiles(t, cred, nil, args...)
}

// startCryoFiles runs bin/cryo with files as its fds 3, 4, ...
func startCryoFiles(t *testing.T, cred *syscall.Credential, files []*os.File, args ...string) *cryoProc {
	t.Helper()
	cp := &cryoProc{out: &lockedBuffer{}, done: make(chan struct{}), res: &cryoResult{args: args}}
	cp.cmd = exec.Command(cryoBin, args...)
	cp.cmd.ExtraFiles = files
	cp.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cp.cmd.Stdout, cp.cmd.Stderr = cp.out, cp.out
	cp.cmd.Stdin = nil
	cp.t0 = time.Now()
	if err := cp.cmd.Start(); err != nil {
		t.Fatalf("start cryo: %v", err)
	}
	go func() {
		_ = cp.cmd.Wait()
		cp.res.dur = time.Since(cp.t0)
		cp.res.code = cp.cmd.ProcessState.ExitCode()
		cp.res.output = cp.out.String()
		close(cp.done)
	}()
	t.Cleanup(func() { cp.kill() })
	return cp
}

func (cp *cryoProc) kill() {
	select {
	case <-cp.done:
	default:
		_ = cp.cmd.Process.Kill()
		<-cp.done
	}
}

// wait waits for cryo to exit; after d it kills it and marks a timeout.
func (cp *cryoProc) wait(d time.Duration) *cryoResult {
	select {
	case <-cp.done:
	case <-time.After(d):
		cp.res.timedOut = true
		cp.kill()
	}
	return cp.res
}

func runCryo(t *testing.T, d time.Duration, args ...string) *cryoResult {
	t.Helper()
	return startCryo(t, args...).wait(d)
}

// dump runs `cryo dump` of pid into imgDir with a log, and returns the result.
func dump(t *testing.T, pid int, imgDir string, extra ...string) *cryoResult {
	t.Helper()
	logPath := imgDir + ".dump.log"
	w := armState(t, imgDir, "post-dump", pid)
	args := append([]string{"dump", "-t", strconv.Itoa(pid), "-D", imgDir, "-v4", "-o", logPath, "--action-script", stateHook}, extra...)
	cp := startCryo(t, args...)
	keepState(imgDir, w, cp.done)
	r := cp.wait(dumpTimeout)
	if r.code != 0 || r.timedOut {
		r.output += readLog(logPath)
	} else {
		checkCRIU(t, imgDir)
	}
	return r
}

// checkCRIU fails the test if the image cryo just wrote in imgDir lacks
// anything CRIU's restore requires (imageset.CheckCRIU).
func checkCRIU(t *testing.T, imgDir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(imgDir, "inventory.img")); err != nil {
		return // not written to a directory (a stream, a page server)
	}
	s, err := imageset.Load(imgDir)
	if err == nil {
		err = imageset.CheckCRIU(s)
	}
	if err != nil {
		t.Errorf("image %s is not one CRIU restores: %v", imgDir, err)
	}
}

func mustDump(t *testing.T, pid int, imgDir string, extra ...string) {
	t.Helper()
	if err := os.MkdirAll(imgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if r := dump(t, pid, imgDir, extra...); r.code != 0 || r.timedOut {
		t.Fatalf("dump failed: %v", r)
	}
}

func readLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	const max = 16 << 10
	if len(b) > max {
		b = append([]byte("...\n"), b[len(b)-max:]...)
	}
	return fmt.Sprintf("\n--- %s ---\n%s", path, b)
}

// restoreArgs are the arguments of `cryo restore` from imgDir.
func restoreArgs(imgDir string, extra ...string) []string {
	return append([]string{"restore", "-D", imgDir, "-v4", "-o", imgDir + ".restore.log", "--action-script", stateHook}, extra...)
}

// lastLines returns the last n lines of s, for short error reports.
func lastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func readCmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(b)
}

// restoreDetached restores img with -d and arranges for the restored tree
// to be killed when the test ends; it fails the test if the restore does.
func restoreDetached(t *testing.T, tg *target, img string, extra ...string) {
	t.Helper()
	w := armState(t, img, "pre-resume", tg.pid)
	cp := startCryo(t, restoreArgs(img, append([]string{"-d"}, extra...)...)...)
	t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
	expectSameState(t, img, w, cp.done)
	if r := cp.wait(restoreTimeout); r.code != 0 {
		t.Fatalf("restore -d: %v\n%s", r, readLog(img+".restore.log"))
	}
	time.Sleep(200 * time.Millisecond)
}

// cycleAgain checkpoints a restored tree once more (a restored tree must be
// as dumpable as the original), restores it in the foreground, fires the
// trigger and returns the restore's result: the root's exit status. The
// second image's restore log is in img2+".restore.log".
func cycleAgain(t *testing.T, tg *target) (res *cryoResult, img2 string) {
	t.Helper()
	img2 = filepath.Join(t.TempDir(), "img2")
	mustDump(t, tg.pid, img2)
	if _, err := waitReaped(tg.pid, exitTimeout); err != nil {
		t.Fatalf("restored %s after its dump: %v", tg.name, err)
	}
	reapOrphans(t)
	w := armState(t, img2, "pre-resume", tg.pid)
	cp := startCryo(t, restoreArgs(img2)...)
	expectSameState(t, img2, w, cp.done)
	tg.fire()
	return cp.wait(restoreTimeout), img2
}
