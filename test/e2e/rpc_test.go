package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	criu "github.com/checkpoint-restore/go-criu/v8"
	"github.com/checkpoint-restore/go-criu/v8/rpc"

	"github.com/cryo-project/cryo/internal/procstate"
)

// The RPC tests drive bin/cryo as go-criu drives criu (`criu swrk FD`,
// CRIU's protobuf RPC), with go-criu's own client: what runc, crun and
// Podman would see.

func rpcClient() *criu.Criu {
	c := criu.MakeCriu()
	c.SetCriuPath(cryoBin)
	return c
}

// rpcNotes records the notifications a dump or restore sent, and takes the
// state snapshots at post-dump and post-restore (both with the tree
// stopped, as the harness's own hook does).
type rpcNotes struct {
	criu.NoNotify
	pid    int
	events []string
	tree   *procstate.Tree
	err    error
	fail   string // the event to answer with an error
}

func (n *rpcNotes) note(e string) error {
	n.events = append(n.events, e)
	if e == n.fail {
		return os.ErrInvalid
	}
	return nil
}

func (n *rpcNotes) PreDump() error    { return n.note("pre-dump") }
func (n *rpcNotes) PreRestore() error { return n.note("pre-restore") }
func (n *rpcNotes) PostResume() error { return n.note("post-resume") }
func (n *rpcNotes) PostDump() error {
	n.tree, n.err = procstate.Take(n.pid)
	return n.note("post-dump")
}
func (n *rpcNotes) PostRestore(pid int32) error {
	if int(pid) != n.pid {
		n.err = os.ErrNotExist
	}
	n.tree, n.err = procstate.Take(int(pid))
	return n.note("post-restore")
}

func openDir(t *testing.T, dir string) *os.File {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestRPCVersion: VERSION says which CRIU cryo stands in for, so that
// callers that need a minimum (Podman 3.11, runc 3.0) go on.
func TestRPCVersion(t *testing.T) {
	requireCryo(t)
	c := rpcClient()
	v, err := c.GetCriuVersion()
	if err != nil {
		t.Fatalf("VERSION: %v", err)
	}
	if v < 40000 {
		t.Errorf("VERSION %d, want at least 4.0 (40000)", v)
	}
	if ok, err := c.IsCriuAtLeast(31100); err != nil || !ok {
		t.Errorf("IsCriuAtLeast(3.11) = %v, %v; Podman would refuse cryo", ok, err)
	}
}

// TestRPCDumpRestore: a dump and a restore over RPC, with images_dir_fd,
// work_dir_fd, log_file and notifications, give back the process with its
// state (the /proc snapshots at post-dump and post-restore are equal),
// and it passes its own checks.
func TestRPCDumpRestore(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "counter")
	img := filepath.Join(tg.dir, "img")
	work := filepath.Join(tg.dir, "work")
	imgDir, workDir := openDir(t, img), openDir(t, work)
	// The options name the caller's fds, which cryo reaches via /proc, as
	// criu does.
	dn := &rpcNotes{pid: tg.pid}
	err := rpcClient().Dump(&rpc.CriuOpts{
		ImagesDirFd: ptr(int32(imgDir.Fd())), WorkDirFd: ptr(int32(workDir.Fd())),
		Pid: ptr(int32(tg.pid)), LogLevel: ptr(int32(4)), LogFile: ptr("dump.log"),
	}, dn)
	if err != nil {
		t.Fatalf("RPC dump: %v\n%s", err, readLog(filepath.Join(work, "dump.log")))
	}
	tg.expectKilled()
	if got := strings.Join(dn.events, " "); got != "pre-dump post-dump" {
		t.Errorf("dump notifications %q, want pre-dump post-dump", got)
	}
	if dn.err != nil || dn.tree == nil {
		t.Fatalf("state at post-dump: %v", dn.err)
	}
	if !strings.Contains(readLog(filepath.Join(work, "dump.log")), "images written") {
		t.Errorf("dump.log in work_dir_fd lacks the dump's record:\n%s", readLog(filepath.Join(work, "dump.log")))
	}

	rn := &rpcNotes{pid: tg.pid}
	t.Cleanup(func() { killRestored(t, tg.pid, tg.name) })
	err = rpcClient().Restore(&rpc.CriuOpts{
		ImagesDirFd: ptr(int32(imgDir.Fd())), LogLevel: ptr(int32(4)), LogFile: ptr("restore.log"),
	}, rn)
	if err != nil {
		t.Fatalf("RPC restore: %v\n%s", err, readLog(filepath.Join(img, "restore.log")))
	}
	if got := strings.Join(rn.events, " "); got != "pre-restore post-restore post-resume" {
		t.Errorf("restore notifications %q, want pre-restore post-restore post-resume", got)
	}
	if rn.err != nil || rn.tree == nil {
		t.Fatalf("state at post-restore: %v", rn.err)
	}
	for _, d := range procstate.Diff(dn.tree, rn.tree) {
		t.Errorf("after RPC restore: %s", d)
	}
	time.Sleep(100 * time.Millisecond)
	tg.fire()
	ws, err := waitReaped(tg.pid, exitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	tg.expectPassed(ws.ExitStatus(), "after RPC restore")
	checkTargetLog(t, tg)
}

// TestRPCRefuses: an option cryo does not handle fails the request naming
// it, and the process is not touched; a notification the caller fails
// stops the dump with the process running, as with criu.
func TestRPCRefuses(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "counter")
	img := filepath.Join(tg.dir, "img")
	imgDir := openDir(t, img)
	for _, tc := range []struct {
		name string
		opts *rpc.CriuOpts
		want string
	}{
		{"manage_cgroups", &rpc.CriuOpts{ManageCgroups: ptr(true)}, "manage_cgroups"},
		{"external", &rpc.CriuOpts{External: []string{"mnt[/x]:y"}}, "external"},
		{"lazy_pages", &rpc.CriuOpts{LazyPages: ptr(true), TrackMem: ptr(true)}, "track_mem, lazy_pages"},
		{"no pid", &rpc.CriuOpts{Pid: nil}, "the caller itself"},
	} {
		o := tc.opts
		o.ImagesDirFd = ptr(int32(imgDir.Fd()))
		if tc.name != "no pid" {
			o.Pid = ptr(int32(tg.pid))
		}
		err := rpcClient().Dump(o, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: dump gave %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
	for _, fail := range []string{"pre-dump", "post-dump"} {
		n := &rpcNotes{pid: tg.pid, fail: fail}
		err := rpcClient().Dump(&rpc.CriuOpts{ImagesDirFd: ptr(int32(imgDir.Fd())), Pid: ptr(int32(tg.pid))}, n)
		if err == nil {
			t.Fatalf("dump with %s failed by the caller succeeded", fail)
		}
	}
	if !runsTarget(tg.pid, tg.name) || procState(tg.pid) == "t" {
		t.Fatalf("after refused dumps the target is %s, want it running", procState(tg.pid))
	}
	tg.fire()
	st, ok := tg.waitExit(exitTimeout)
	if !ok {
		t.Fatal("target did not finish")
	}
	tg.expectPassed(st.ExitCode(), "after refused RPC dumps")
}

func ptr[T any](v T) *T { return &v }
