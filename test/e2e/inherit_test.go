package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	criu "github.com/checkpoint-restore/go-criu/v8"
	"github.com/checkpoint-restore/go-criu/v8/rpc"
)

// A program whose stdin and stdout are pipes to a process outside the tree
// — a shell pipeline's neighbours, a supervisor, containerd — is dumped
// with those pipes, and restored onto the pipes the restore is given
// (criu's --inherit-fd), as a supervisor restarting it would do.

// pipeJob is /bin/sh with its stdin and stdout on pipes the test holds:
// it echoes one line, says "pending" (which the test leaves unread in the
// old pipe), then waits for the trigger without reading stdin, so that
// what the test writes meanwhile stays unread in the pipe across the dump;
// after the trigger it becomes cat, copying stdin to stdout until EOF.
type pipeJob struct {
	pid       int
	in, out   *os.File // the test's ends: stdin's write end, stdout's read end
	inKey     string   // pipe:[ID] of stdin
	outKey    string
	trigger   string
	cmd       *exec.Cmd
	dir, name string
}

const pipeJobScript = `read a; echo "got:$a"; echo pending; while [ ! -e "$1" ]; do sleep 0.02; done; exec cat`

func startPipeJob(t *testing.T) *pipeJob {
	t.Helper()
	dir := t.TempDir()
	inR, inW := mustPipe(t)
	outR, outW := mustPipe(t)
	j := &pipeJob{in: inW, out: outR, dir: dir, trigger: filepath.Join(dir, "go"), name: "sh",
		inKey: pipeKey(t, inR), outKey: pipeKey(t, outR)}
	j.cmd = exec.Command("/bin/sh", "-c", pipeJobScript, "sh", j.trigger)
	j.cmd.Stdin, j.cmd.Stdout = inR, outW
	j.cmd.Stderr = nil
	if err := j.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	j.pid = j.cmd.Process.Pid
	inR.Close()
	outW.Close()
	t.Cleanup(func() { killRestored(t, j.pid, j.name); j.cmd.Process.Release() })
	if _, err := io.WriteString(j.in, "one\n"); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, j.out, len("got:one\n")); got != "got:one\n" {
		t.Fatalf("pipe job said %q, want got:one", got)
	}
	// Written while the job does not read: unread at the dump.
	if _, err := io.WriteString(j.in, "unread\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // "pending" written, the loop entered
	return j
}

func mustPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func pipeKey(t *testing.T, f *os.File) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("pipe:[%d]", st.Ino)
}

func readN(t *testing.T, f *os.File, n int) string {
	t.Helper()
	f.SetReadDeadline(time.Now().Add(restoreTimeout))
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatalf("read %d bytes: %v (got %q)", n, err, b)
	}
	return string(b)
}

// dumpAndDrain dumps the job and reads what it left in its old stdout:
// "pending", unread before the dump, is the outside reader's and stays
// there. The old pipes stay open (the dump's keeper holds the job's ends)
// until a restore takes them, or is given others (expectOldClosed).
func (j *pipeJob) dumpAndDrain(t *testing.T) string {
	t.Helper()
	img := filepath.Join(j.dir, "img")
	mustDump(t, j.pid, img)
	if ws, err := waitReaped(j.pid, exitTimeout); err != nil || !ws.Signaled() {
		t.Fatalf("after the dump the job: %v %v", describe(ws), err)
	}
	reapOrphans(t) // its sleep, killed with it
	if got := readN(t, j.out, len("pending\n")); got != "pending\n" {
		t.Fatalf("the old stdout held %q, want the unread \"pending\\n\"", got)
	}
	return img
}

// expectOldClosed checks that nothing holds the job's old stdout any more
// once a restore on other pipes runs: the keeper let go, so the outside
// reader sees EOF, and nothing more was written.
func (j *pipeJob) expectOldClosed(t *testing.T) {
	t.Helper()
	j.out.SetReadDeadline(time.Now().Add(exitTimeout))
	rest, err := io.ReadAll(j.out)
	if err != nil || len(rest) != 0 {
		t.Errorf("the old stdout gave %q (%v) after the restore, want EOF: the keeper should be gone", rest, err)
	}
	expectNoKeeper(t)
}

// expectNoKeeper waits for the dump's keeper to exit.
func expectNoKeeper(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(exitTimeout)
	for len(keepersLeft()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("keepers %v still run %v after the restore took or replaced their pipes", keepersLeft(), exitTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// finish lets the restored job run on its new pipes: it reads the byte the
// restore refilled, then what the test writes, and exits 0 at EOF.
func (j *pipeJob) finish(t *testing.T, in, out *os.File) {
	t.Helper()
	if err := os.WriteFile(j.trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(in, "two\n"); err != nil {
		t.Fatal(err)
	}
	in.Close()
	out.SetReadDeadline(time.Now().Add(restoreTimeout))
	got, err := io.ReadAll(out)
	if err != nil || string(got) != "unread\ntwo\n" {
		t.Errorf("restored job wrote %q (%v), want the unread line, then the new one", got, err)
	}
	ws, err := waitReaped(j.pid, exitTimeout)
	if err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("restored job ended %v %v, want exit 0", describe(ws), err)
	}
}

// TestInheritFdPipes: a job on outside pipes is dumped; a restore given
// the wrong end of a pipe is refused; with new pipes it carries on, the
// line that was unread in its stdin first, and the old pipes, which the
// dump's keeper held meanwhile, are let go.
func TestInheritFdPipes(t *testing.T) {
	requireCryo(t)
	j := startPipeJob(t)
	img := j.dumpAndDrain(t)

	// The wrong end of a pipe is refused.
	inR, inW := mustPipe(t)
	outR, outW := mustPipe(t)
	r := startCryoFiles(t, nil, []*os.File{inW, outW}, restoreArgs(img, "-d",
		"--inherit-fd", "fd[3]:"+j.inKey, "--inherit-fd", "fd[4]:"+j.outKey)...).wait(restoreTimeout)
	if r.code == 0 || !strings.Contains(r.output, "read end") {
		killRestored(t, j.pid, j.name)
		t.Fatalf("restore given stdin's write end: %v, want a refusal naming the read end", r)
	}

	w := armState(t, img, "pre-resume", j.pid)
	cp := startCryoFiles(t, nil, []*os.File{inR, outW}, restoreArgs(img, "-d",
		"--inherit-fd", "fd[3]:"+j.inKey, "--inherit-fd", "fd[4]:"+j.outKey)...)
	expectSameState(t, img, w, cp.done)
	if r := cp.wait(restoreTimeout); r.code != 0 {
		t.Fatalf("restore with --inherit-fd: %v%s", r, readLog(img+".restore.log"))
	}
	inR.Close()
	outW.Close()
	j.finish(t, inW, outR)
	j.expectOldClosed(t)
}

// TestInheritFdRPC: the same through CRIU's RPC, with the pipes handed
// over as runc hands a container's stdio (go-criu's AddInheritFd).
func TestInheritFdRPC(t *testing.T) {
	requireCryo(t)
	j := startPipeJob(t)
	img := j.dumpAndDrain(t)
	imgDir := openDir(t, img)
	inR, inW := mustPipe(t)
	outR, outW := mustPipe(t)
	c := criu.MakeCriu()
	c.SetCriuPath(cryoBin)
	c.AddInheritFd(j.inKey, inR)
	c.AddInheritFd(j.outKey, outW)
	err := c.Restore(&rpc.CriuOpts{ImagesDirFd: ptr(int32(imgDir.Fd())), LogLevel: ptr(int32(4)), LogFile: ptr("restore.log")}, nil)
	if err != nil {
		t.Fatalf("RPC restore with inherit_fd: %v%s", err, readLog(filepath.Join(img, "restore.log")))
	}
	inR.Close()
	outW.Close()
	j.finish(t, inW, outR)
	j.expectOldClosed(t)
}

// TestOutsidePipesKept: a job whose stdin and stdout are pipes to the test
// is dumped and restored with no --inherit-fd: it is back on the very same
// pipes (the dump's keeper held its ends meanwhile, so the test saw neither
// EOF nor EPIPE), reads the line that was unread in its stdin, then what
// the test writes after the restore, and writes both to the old stdout.
func TestOutsidePipesKept(t *testing.T) {
	requireCryo(t)
	j := startPipeJob(t)
	img := j.dumpAndDrain(t)
	w := armState(t, img, "pre-resume", j.pid)
	cp := startCryo(t, restoreArgs(img, "-d")...)
	expectSameState(t, img, w, cp.done)
	if r := cp.wait(restoreTimeout); r.code != 0 {
		t.Fatalf("restore onto the kept pipes: %v%s", r, readLog(img+".restore.log"))
	}
	j.finish(t, j.in, j.out)
	expectNoKeeper(t)
}

// killKeeper SIGKILLs the dump's keeper, as the OOM killer might: the
// restore must do without it.
func killKeeper(t *testing.T) {
	t.Helper()
	ks := keepersLeft()
	if len(ks) != 1 {
		t.Fatalf("want one keeper after the dump, have %v", ks)
	}
	if err := syscall.Kill(ks[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := waitReaped(ks[0], exitTimeout); err != nil {
		t.Fatal(err)
	}
}

// TestOutsidePipesLateWriter: after the dump the test writes one more line
// into the job's stdin and closes it. The keeper holds that line (the image
// does not have it) until the restore takes the pipe: the job copies the
// line unread at the dump, then the late one, then sees EOF.
func TestOutsidePipesLateWriter(t *testing.T) {
	requireCryo(t)
	j := startPipeJob(t)
	img := j.dumpAndDrain(t)
	if _, err := io.WriteString(j.in, "late\n"); err != nil {
		t.Fatal(err)
	}
	j.in.Close()
	time.Sleep(50 * time.Millisecond) // the keeper sees the writer go
	if r := runCryo(t, restoreTimeout, restoreArgs(img, "-d")...); r.code != 0 {
		t.Fatalf("restore: %v%s", r, readLog(img+".restore.log"))
	}
	if err := os.WriteFile(j.trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	j.out.SetReadDeadline(time.Now().Add(restoreTimeout))
	got, err := io.ReadAll(j.out)
	if err != nil || string(got) != "unread\nlate\n" {
		t.Errorf("restored job wrote %q (%v), want the unread line, then the late one", got, err)
	}
	if ws, err := waitReaped(j.pid, exitTimeout); err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("restored job ended %v %v, want exit 0", describe(ws), err)
	}
	expectNoKeeper(t)
}

// TestOutsidePipesKeeperKilled: the keeper is SIGKILLed after the dump.
// The test still holds the outside ends, so the restore finds the same
// pipes through them (/proc/PID/fd of the test) and the job carries on on
// them, the line that was unread in its stdin still there. Reopened, the
// pipes' descriptions have O_LARGEFILE, which the kernel sets on every
// open: the one difference, said in the log (a warning) and checked here.
func TestOutsidePipesKeeperKilled(t *testing.T) {
	requireCryo(t)
	j := startPipeJob(t)
	before := map[string]string{}
	for _, fd := range []string{"0", "1"} {
		before[fd] = fdinfoFlags(t, j.pid, fd)
	}
	img := j.dumpAndDrain(t)
	killKeeper(t)
	if r := runCryo(t, restoreTimeout, restoreArgs(img, "-d")...); r.code != 0 {
		t.Fatalf("restore without the keeper: %v%s", r, readLog(img+".restore.log"))
	}
	if log := readLog(img + ".restore.log"); strings.Count(log, "re-attached to its outside end") != 2 || !strings.Contains(log, "O_LARGEFILE") {
		t.Errorf("the restore log does not warn that both pipes were re-attached, with O_LARGEFILE:\n%s", lastLines(log, 20))
	}
	const oLargefile = 0o100000 // the kernel's; Go's syscall says 0 on amd64
	for _, fd := range []string{"0", "1"} {
		was, _ := strconv.ParseUint("0"+before[fd], 8, 32)
		if got := fdinfoFlags(t, j.pid, fd); got != strconv.FormatUint(was|oLargefile, 8) {
			t.Errorf("fd %s: flags %s after the restore, want %o (%o and O_LARGEFILE)", fd, got, was|oLargefile, was)
		}
	}
	j.finish(t, j.in, j.out)
}

// fdinfoFlags is the flags line of /proc/PID/fdinfo/FD, in octal.
func fdinfoFlags(t *testing.T, pid int, fd string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			return strings.TrimLeft(strings.TrimSpace(v), "0")
		}
	}
	t.Fatalf("no flags in fdinfo %d/%s", pid, fd)
	return ""
}

// TestOutsidePipesGone: the keeper is killed and the test closes its ends
// of the job's pipes after the dump: no process holds them. The restore
// makes them again, as CRIU does: the job reads the line that was unread
// in its stdin (from the image), then EOF, and its stdout has no reader.
func TestOutsidePipesGone(t *testing.T) {
	requireCryo(t)
	j := startPipeJob(t)
	img := j.dumpAndDrain(t)
	killKeeper(t)
	j.in.Close()
	j.out.Close()
	r := runCryo(t, restoreTimeout, restoreArgs(img, "-d")...)
	if r.code != 0 {
		t.Fatalf("restore of a job whose outside pipe ends are gone: %v%s", r, readLog(img+".restore.log"))
	}
	if log := readLog(img + ".restore.log"); strings.Count(log, "without its outside end") != 2 {
		t.Errorf("the restore log does not say both pipes came back without their outside ends:\n%s", lastLines(log, 20))
	}
	for _, fd := range []string{"0", "1"} {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", j.pid, fd)); err != nil || !strings.HasPrefix(l, "pipe:[") {
			t.Errorf("restored job's fd %s: %q %v, want a pipe", fd, l, err)
		}
	}
	if err := os.WriteFile(j.trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// cat copies the unread line into a pipe no one reads: SIGPIPE.
	ws, err := waitReaped(j.pid, exitTimeout)
	if err != nil || !ws.Signaled() || ws.Signal() != syscall.SIGPIPE {
		t.Errorf("restored job ended %v %v, want SIGPIPE (its stdout's reader is gone)", describe(ws), err)
	}
}

// TestOutsidePipeProducer: `sh -c 'produce | consume'` checkpointed at the
// producer alone, as `prog | tee log` is at prog: the consumer, outside
// the dumped tree, keeps reading through the dump and the restore (the
// keeper holds the producer's end meanwhile, so it never sees EOF), and
// checks that every byte follows the one before. The producer leads a
// session of its own (setsid): one led from outside the tree is refused
// without --shell-job unless the restore runs in it. Twice: the restored
// producer is dumped and restored again. The pipeline's status is the
// consumer's.
func TestOutsidePipeProducer(t *testing.T) {
	requireRoot(t)
	requireCryo(t)
	tg := startTarget(t, "pipeline-setsid")
	producer := producerOf(t, tg)
	for round := 1; round <= 2; round++ {
		img := filepath.Join(t.TempDir(), "img")
		mustDump(t, producer, img)
		if !waitDumped(producer) {
			t.Fatalf("round %d: the producer runs on after the dump", round)
		}
		time.Sleep(50 * time.Millisecond) // the consumer drains what the pipe held
		if _, done := tg.waitExit(0); done {
			t.Fatalf("round %d: the pipeline ended while its producer was dumped:\n%s", round, tg.log())
		}
		w := armState(t, img, "pre-resume", producer)
		cp := startCryo(t, restoreArgs(img, "-d")...)
		expectSameState(t, img, w, cp.done)
		if r := cp.wait(restoreTimeout); r.code != 0 {
			t.Fatalf("round %d: restore of the producer: %v%s", round, r, readLog(img+".restore.log"))
		}
		if log := readLog(img + ".restore.log"); strings.Contains(log, "without its outside end") {
			t.Fatalf("round %d: the producer's stdout came back without its reader:\n%s", round, lastLines(log, 20))
		}
		expectNoKeeper(t)
	}
	t.Cleanup(func() { killRestored(t, producer, "pipeline") })
	tg.fire()
	st, done := tg.waitExit(exitTimeout)
	if !done || !st.Success() || !strings.Contains(tg.log(), "PASS stream") {
		t.Fatalf("pipeline after its producer was checkpointed twice: %v %v\n%s", st, done, tg.log())
	}
}

// TestRestoreOutsideSession: a producer in its shell's session and group
// (`produce | consume` under sh, which leads both) dumped alone: a restore
// from a cryo in another session is refused, naming --shell-job, and
// builds nothing (it would have come back in cryo's session and group);
// with --shell-job it joins them, as CRIU's does, and the pipeline
// finishes its check.
func TestRestoreOutsideSession(t *testing.T) {
	requireRoot(t)
	requireCryo(t)
	tg := startTarget(t, "pipeline")
	producer := producerOf(t, tg)
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, producer, img)
	waitDumped(producer)
	r := runCryo(t, restoreTimeout, restoreArgs(img, "-d")...)
	if r.code == 0 || !strings.Contains(r.output, "--shell-job") || !strings.Contains(r.output, fmt.Sprint(tg.pid)) {
		killRestored(t, producer, "pipeline")
		t.Fatalf("restore of a producer whose session is its shell's: %v, want a refusal naming session %d and --shell-job", r, tg.pid)
	}
	if runsTarget(producer, "pipeline") {
		t.Fatalf("the refused restore left pid %d", producer)
	}
	if r := runCryo(t, restoreTimeout, restoreArgs(img, "-d", "--shell-job")...); r.code != 0 {
		t.Fatalf("restore --shell-job: %v%s", r, readLog(img+".restore.log"))
	}
	t.Cleanup(func() { killRestored(t, producer, "pipeline") })
	if sid, _ := unix.Getsid(producer); sid == tg.pid {
		t.Errorf("the --shell-job restore left the producer in its old session %d", sid)
	}
	tg.fire()
	st, done := tg.waitExit(exitTimeout)
	if !done || !st.Success() || !strings.Contains(tg.log(), "PASS stream") {
		t.Fatalf("pipeline after its producer was checkpointed: %v %v\n%s", st, done, tg.log())
	}
}

// TestKillCryoMidDumpOutsidePipes: a dump of a job on pipes to the test is
// SIGKILLed, with its worker, at a random moment, as the OOM killer might.
// Whatever the moment, the job carries on on the same pipes, losing and
// repeating nothing: either the dump did not finish and the job runs on
// (no keeper left behind), or it did and a restore brings it back onto
// them (through the keeper, or, if the keeper was never told the dump was
// complete and left, through the test's ends).
func TestKillCryoMidDumpOutsidePipes(t *testing.T) {
	requireCryo(t)
	loops := killLoops(t, 30)
	outcomes := map[string]int{}
	for i := range loops {
		j := startPipeJob(t)
		img := filepath.Join(j.dir, "img")
		cp := startCryo(t, "dump", "-t", strconv.Itoa(j.pid), "-D", img)
		delay := time.Duration(rand.IntN(41)) * time.Millisecond
		time.Sleep(delay)
		killWorkers(cp.cmd.Process.Pid)
		_ = cp.cmd.Process.Signal(syscall.SIGKILL)
		cp.wait(5 * time.Second)
		for _, w := range orphanedCryos() {
			if !isKeeper(w) {
				if _, err := waitReaped(w, exitTimeout); err != nil {
					t.Fatalf("iteration %d (kill after %v): worker %d: %v", i, delay, w, err)
				}
			}
		}
		if ws, err := waitReaped(j.pid, 200*time.Millisecond); err == nil {
			if !ws.Signaled() {
				t.Fatalf("iteration %d (kill after %v): the job ended %v", i, delay, describe(ws))
			}
			// Dumped and killed: the image is complete; restore it.
			outcome := "dumped, restored through the keeper"
			if len(keepersLeft()) == 0 {
				outcome = "dumped, keeper gone, restored through the test's ends"
			}
			reapOrphans(t)
			if r := runCryo(t, restoreTimeout, restoreArgs(img, "-d")...); r.code != 0 {
				t.Fatalf("iteration %d (kill after %v): restore: %v%s", i, delay, r, readLog(img+".restore.log"))
			}
			outcomes[outcome]++
		} else {
			expectNoKeeper(t)
			outcomes["dump did not finish, job ran on"]++
		}
		if got := readN(t, j.out, len("pending\n")); got != "pending\n" {
			t.Fatalf("iteration %d (kill after %v): the job's stdout held %q, want \"pending\\n\"", i, delay, got)
		}
		j.finish(t, j.in, j.out)
		expectNoKeeper(t)
		if t.Failed() {
			t.Fatalf("iteration %d (kill after %v) failed", i, delay)
		}
	}
	t.Logf("%d kills of a dump of a job on outside pipes: %v", loops, outcomes)
}

// producerOf is the producer of the pipeline tg, `produce | consume`.
func producerOf(t *testing.T, tg *target) int {
	t.Helper()
	for _, p := range treePids(tg.pid)[1:] {
		if strings.HasSuffix(readCmdline(p), "\x00produce\x00") {
			return p
		}
	}
	t.Fatalf("no producer among %v", treePids(tg.pid))
	return 0
}

// waitDumped waits, bounded, for a process the dump killed to be reaped:
// by its parent (a shell), or by the test (a subreaper, the parent of a
// restored one). It says whether it went.
func waitDumped(pid int) bool {
	for deadline := time.Now().Add(exitTimeout); !reapIfChild(pid); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}
