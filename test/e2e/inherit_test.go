package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

// dumpAndDrain dumps the job and checks what it left in its old stdout:
// "pending", unread before the dump, is the outside reader's and stays
// there; nothing else (the job is gone, its write ends closed).
func (j *pipeJob) dumpAndDrain(t *testing.T) string {
	t.Helper()
	img := filepath.Join(j.dir, "img")
	mustDump(t, j.pid, img)
	if ws, err := waitReaped(j.pid, exitTimeout); err != nil || !ws.Signaled() {
		t.Fatalf("after the dump the job: %v %v", describe(ws), err)
	}
	reapOrphans(t) // its sleep, killed with it
	j.out.SetReadDeadline(time.Now().Add(exitTimeout))
	rest, err := io.ReadAll(j.out)
	if err != nil || string(rest) != "pending\n" {
		t.Fatalf("the old stdout held %q (%v), want exactly the unread \"pending\\n\"", rest, err)
	}
	return img
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

// TestInheritFdPipes: a job on outside pipes is dumped; restore without
// --inherit-fd is refused naming both pipes and the flag; with new pipes it
// carries on, the byte that was unread in its stdin first.
func TestInheritFdPipes(t *testing.T) {
	requireCryo(t)
	j := startPipeJob(t)
	img := j.dumpAndDrain(t)

	r := runCryo(t, restoreTimeout, restoreArgs(img, "-d")...)
	if r.code == 0 {
		killRestored(t, j.pid, j.name)
		t.Fatal("restore without --inherit-fd of a job whose pipes were outside succeeded")
	}
	for _, want := range []string{j.inKey, j.outKey, "--inherit-fd"} {
		if !strings.Contains(r.output, want) {
			t.Errorf("refusal %q does not name %s", r.output, want)
		}
	}
	if runsTarget(j.pid, j.name) {
		t.Fatalf("a refused restore left pid %d", j.pid)
	}

	// The wrong end of a pipe is refused too.
	inR, inW := mustPipe(t)
	outR, outW := mustPipe(t)
	r = startCryoFiles(t, nil, []*os.File{inW, outW}, restoreArgs(img, "-d",
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
}
