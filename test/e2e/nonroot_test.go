package e2e

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryo-project/cryo/internal/image/imagetest"
)

// nonrootUser is the account the non-root tests run cryo and the targets as;
// created when missing (and left: creating it again is cheap, deleting it
// while a test of another run uses it is not).
const nonrootUser = "cryotest"

// nonrootCaps is the minimum file capability cryo needs to dump and restore a
// process of its own user (docs/nonroot.md).
const nonrootCaps = "cap_checkpoint_restore+ep"

// nonrootTargets are the targets that must survive a non-root round trip.
// signals is not among them: it installs a seccomp filter, and reading one
// needs CAP_SYS_ADMIN (TestNonRootSeccomp checks the error).
var nonrootTargets = []string{"threads", "memory", "mlock", "files", "counter", "gothreads", "tree", "creds"}

// TestNonRoot: as an ordinary user, with only cap_checkpoint_restore on the
// cryo binary, dump and restore a process of that user's; the restored
// process must pass all its checks and hold no capability. Without the file
// capability both dump and restore must fail naming CAP_CHECKPOINT_RESTORE
// and leave the process as it was.
func TestNonRoot(t *testing.T) {
	env := setupNonRoot(t)
	for _, name := range nonrootTargets {
		t.Run(name, func(t *testing.T) {
			tg := env.startTarget(t, name)
			img := filepath.Join(tg.dir, "img")

			// No capability: refused before the process is touched.
			r := env.cryo(t, env.plain, dumpTimeout, "dump", "-t", strconv.Itoa(tg.pid), "-D", img)
			if r.code == 0 || !strings.Contains(r.output, "CAP_CHECKPOINT_RESTORE") {
				t.Fatalf("dump without the file capability: want a failure naming CAP_CHECKPOINT_RESTORE, got: %v", r)
			}
			expectAliveUnstopped(t, tg.pid, "after the refused dump")

			sw := armState(t, img, "post-dump", tg.pid)
			dcp := env.startCryo(t, env.capped, "dump", "-t", strconv.Itoa(tg.pid), "-D", img, "-v4", "-o", img+".dump.log", "--action-script", stateHook)
			keepState(img, sw, dcp.done)
			r = dcp.wait(dumpTimeout)
			if r.code != 0 || r.timedOut {
				t.Fatalf("dump as %s with %s: %v%s", nonrootUser, nonrootCaps, r, readLog(img+".dump.log"))
			}
			tg.expectKilled()
			reapOrphans(t) // a tree's children, re-parented to the test

			r = env.cryo(t, env.plain, restoreTimeout, "restore", "-D", img, "-d")
			if r.code == 0 || !strings.Contains(r.output, "CAP_CHECKPOINT_RESTORE") {
				t.Fatalf("restore without the file capability: want a failure naming CAP_CHECKPOINT_RESTORE, got: %v", r)
			}
			if runsTarget(tg.pid, name) {
				t.Fatalf("the refused restore left pid %d running %s", tg.pid, name)
			}

			env.restoreAndVerify(t, tg, img)
			checkTargetLog(t, tg)
		})
	}
}

// TestNonRootSeccomp: a process with a seccomp filter cannot be dumped with
// cap_checkpoint_restore alone (PTRACE_SECCOMP_GET_FILTER needs
// CAP_SYS_ADMIN): the error must say so, and the process must go on.
func TestNonRootSeccomp(t *testing.T) {
	env := setupNonRoot(t)
	tg := env.startTarget(t, "signals")
	img := filepath.Join(tg.dir, "img")
	r := env.cryo(t, env.capped, dumpTimeout, "dump", "-t", strconv.Itoa(tg.pid), "-D", img)
	if r.code == 0 || !strings.Contains(r.output, "CAP_SYS_ADMIN") {
		t.Fatalf("dump of a seccomp-filtered process as %s: want a failure naming CAP_SYS_ADMIN, got: %v", nonrootUser, r)
	}
	expectAliveUnstopped(t, tg.pid, "after the refused dump")
	tg.fire()
	st, ok := tg.waitExit(30 * time.Second)
	if !ok {
		t.Fatalf("signals did not finish its checks within 30 s (state %s)", procState(tg.pid))
	}
	tg.expectPassed(st.ExitCode(), "original after the refused dump")
}

// nonrootEnv is a user, a copy of bin/cryo with the file capability
// (capped), one without (plain), and the targets, all in a directory the
// user can read, on a filesystem that keeps security xattrs.
type nonrootEnv struct {
	cred   *syscall.Credential
	home   string // the user's scratch root, owned by the user
	bin    string // root-owned, world-readable: cryo copies and targets
	capped string
	plain  string
}

func setupNonRoot(t *testing.T) *nonrootEnv {
	t.Helper()
	requireCryo(t)
	for _, tool := range []string{"useradd", "setcap"} {
		if _, err := exec.LookPath(tool); err != nil {
			// make test installs both: there, a missing one is a failure.
			if os.Getenv(imagetest.StrictEnv) != "" {
				t.Fatalf("non-root test needs %s (passwd and libcap2-bin packages), and %s is set: %v", tool, imagetest.StrictEnv, err)
			}
			t.Skipf("non-root test needs %s (passwd and libcap2-bin packages): %v", tool, err)
		}
	}
	u, err := user.Lookup(nonrootUser)
	if err != nil {
		addSystemUser(t, nonrootUser)
		if u, err = user.Lookup(nonrootUser); err != nil {
			t.Fatalf("user %s after useradd: %v", nonrootUser, err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 {
		t.Fatalf("user %s has uid 0", nonrootUser)
	}
	// A supplementary group, as users have: it must come back, and the
	// restore (run with the same) must be able to give it.
	env := &nonrootEnv{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{100}}}
	relaxPtraceScope(t)

	// The temp dir first; if its filesystem drops security xattrs (some
	// tmpfs), /var/tmp.
	var setcapErr error
	for _, parent := range []string{os.TempDir(), "/var/tmp"} {
		root, err := os.MkdirTemp(parent, "cryo-nonroot-")
		if err != nil {
			setcapErr = err
			continue
		}
		t.Cleanup(func() { os.RemoveAll(root) })
		env.bin = filepath.Join(root, "bin")
		env.home = filepath.Join(root, "home")
		for _, d := range []string{root, env.bin, env.home} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(env.home, uid, gid); err != nil {
			t.Fatal(err)
		}
		env.capped = filepath.Join(env.bin, "cryo")
		env.plain = filepath.Join(env.bin, "cryo-nocap")
		for _, p := range []string{env.capped, env.plain} {
			copyFile(t, cryoBin, p, 0o755)
		}
		out, err := exec.Command("setcap", nonrootCaps, env.capped).CombinedOutput()
		if err == nil {
			setcapErr = nil
			break
		}
		setcapErr = fmt.Errorf("setcap %s %s: %v: %s", nonrootCaps, env.capped, err, out)
		env.bin = ""
	}
	if env.bin == "" {
		t.Fatalf("no directory where a file capability can be set: %v", setcapErr)
	}
	for _, name := range nonrootTargets {
		copyFile(t, filepath.Join(repo, "bin", "targets", name), filepath.Join(env.bin, name), 0o755)
	}
	copyFile(t, filepath.Join(repo, "bin", "targets", "signals"), filepath.Join(env.bin, "signals"), 0o755)
	return env
}

// relaxPtraceScope sets kernel.yama.ptrace_scope to 0 for the test if it is
// higher: with 1, a tracer without CAP_SYS_PTRACE may attach only to its
// descendants, and the process being dumped is not cryo's.
func relaxPtraceScope(t *testing.T) {
	const path = "/proc/sys/kernel/yama/ptrace_scope"
	b, err := os.ReadFile(path)
	if err != nil {
		return // no Yama: classic ptrace rules
	}
	old := strings.TrimSpace(string(b))
	if old == "0" {
		return
	}
	if err := os.WriteFile(path, []byte("0"), 0); err != nil {
		t.Skipf("kernel.yama.ptrace_scope is %s and cannot be lowered to 0 (%v): a non-root cryo could not dump", old, err)
	}
	t.Logf("kernel.yama.ptrace_scope lowered from %s to 0 for this test", old)
	t.Cleanup(func() {
		if err := os.WriteFile(path, []byte(old), 0); err != nil {
			t.Errorf("put kernel.yama.ptrace_scope back to %s: %v", old, err)
		}
	})
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// startTarget starts the copy of target name as the user, as
// startTargetNoWait does for root: our child, in a session of its own, its
// trigger in a directory of the user's; and waits for READY.
func (env *nonrootEnv) startTarget(t *testing.T, name string) *target {
	t.Helper()
	dir, err := os.MkdirTemp(env.home, name+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(env.cred.Uid), int(env.cred.Gid)); err != nil {
		t.Fatal(err)
	}
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
	logf, err := os.OpenFile(tg.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// The restore reopens the log by path as the user: it must be theirs.
	if err := logf.Chown(int(env.cred.Uid), int(env.cred.Gid)); err != nil {
		t.Fatal(err)
	}
	tg.cmd = exec.Command(filepath.Join(env.bin, name), tg.trigger)
	tg.cmd.Dir = dir
	tg.cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	tg.cmd.Stdout, tg.cmd.Stderr = logf, logf
	tg.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: env.cred}
	if err := tg.cmd.Start(); err != nil {
		t.Fatalf("start %s as %s: %v", name, nonrootUser, err)
	}
	tg.pid = tg.cmd.Process.Pid
	go func() {
		tg.waitErr = tg.cmd.Wait()
		tg.state = tg.cmd.ProcessState
		close(tg.done)
	}()
	t.Cleanup(func() {
		select {
		case <-tg.done:
		default:
			_ = tg.cmd.Process.Kill()
			<-tg.done
		}
		killRestored(t, tg.pid, tg.name)
		if t.Failed() {
			tg.dumpLog()
		}
	})
	tg.waitReady()
	return tg
}

// startCryo runs the cryo binary bin as the user, in the user's directory.
func (env *nonrootEnv) startCryo(t *testing.T, bin string, args ...string) *cryoProc {
	t.Helper()
	cp := &cryoProc{out: &lockedBuffer{}, done: make(chan struct{}), res: &cryoResult{args: append([]string{"(as " + nonrootUser + ", " + filepath.Base(bin) + ")"}, args...)}}
	cp.cmd = exec.Command(bin, args...)
	cp.cmd.Dir = env.home
	cp.cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + env.home}
	cp.cmd.Stdout, cp.cmd.Stderr = cp.out, cp.out
	cp.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: env.cred}
	cp.t0 = time.Now()
	if err := cp.cmd.Start(); err != nil {
		t.Fatalf("start %s as %s: %v", bin, nonrootUser, err)
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

func (env *nonrootEnv) cryo(t *testing.T, bin string, d time.Duration, args ...string) *cryoResult {
	t.Helper()
	return env.startCryo(t, bin, args...).wait(d)
}

// restoreAndVerify restores img as the user in the foreground, checks that
// the process runs as the user with no capability left (cryo handed it
// CAP_CHECKPOINT_RESTORE to be built with), triggers it and expects cryo
// to exit 0 with the target's status after all checks passed.
func (env *nonrootEnv) restoreAndVerify(t *testing.T, tg *target, img string) {
	t.Helper()
	logPath := img + ".restore.log"
	w := armState(t, img, "pre-resume", tg.pid)
	cp := env.startCryo(t, env.capped, "restore", "-D", img, "-v4", "-o", logPath, "--action-script", stateHook)
	expectSameState(t, img, w, cp.done)
	// The process shows its cmdline as soon as its memory is in, long
	// before its credentials are: wait for the log line that says the
	// whole tree was let go.
	deadline := time.Now().Add(restoreTimeout)
	for !strings.Contains(readLog(logPath), "msg=restored") {
		select {
		case <-cp.done:
			if !strings.Contains(readLog(logPath), "msg=restored") {
				t.Fatalf("cryo restore exited before pid %d ran: %v%s", tg.pid, cp.res, readLog(logPath))
			}
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cp.kill()
			t.Fatalf("pid %d not restored %v after restore started: %v%s", tg.pid, restoreTimeout, cp.res, readLog(logPath))
		}
	}
	if !runsTarget(tg.pid, tg.name) {
		t.Fatalf("restore says it is done, but pid %d does not run %s%s", tg.pid, tg.name, readLog(logPath))
	}

	if err := checkUnprivileged(tg.pid, env.cred.Uid); err != nil {
		t.Errorf("restored %s: %v", tg.name, err)
	}
	tg.fire()
	r := cp.wait(restoreTimeout)
	if r.timedOut {
		killRestored(t, tg.pid, tg.name)
		t.Fatalf("cryo restore still running %v after the trigger (state %s): %v%s", restoreTimeout, procState(tg.pid), r, readLog(logPath))
	}
	tg.expectPassed(r.code, "restored as "+nonrootUser)
	if t.Failed() {
		t.Logf("%v%s", r, readLog(logPath))
	}
}

// checkUnprivileged checks that every thread of pid and of its descendants
// runs as uid with empty effective, permitted, inheritable and ambient
// capability sets.
func checkUnprivileged(pid int, uid uint32) error {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, e.Name())); err == nil {
			for _, c := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(c); err == nil {
					errs = append(errs, checkUnprivileged(n, uid))
				}
			}
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "CapInh", "CapPrm", "CapEff", "CapAmb":
				if n, _ := strconv.ParseUint(v, 16, 64); n != 0 {
					errs = append(errs, fmt.Errorf("pid %d thread %s: %s %s, want none", pid, e.Name(), k, v))
				}
			case "Uid":
				if f := strings.Fields(v); len(f) < 4 || f[0] != strconv.Itoa(int(uid)) || f[1] != f[0] || f[2] != f[0] || f[3] != f[0] {
					errs = append(errs, fmt.Errorf("pid %d thread %s: Uid %s, want %d everywhere", pid, e.Name(), v, uid))
				}
			}
		}
	}
	return errors.Join(errs...)
}
