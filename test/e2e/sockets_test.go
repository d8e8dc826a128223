package e2e

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSockets checkpoints a tree whose two processes share stream, dgram
// and seqpacket socketpairs with data queued both ways, a listener bound to
// a path with an accepted connection and two clients waiting in its
// backlog, and a seqpacket listener on an abstract name with two waiting
// clients; restores it and lets each process check the bytes, message
// boundaries, names, buffer sizes and backlog order, then round trips.
// Then again from the restored tree.
func TestSockets(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "sockets")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)

	restoreDetached(t, tg, img)
	res, img2 := cycleAgain(t, tg)
	if res.timedOut {
		t.Fatalf("sockets after two checkpoints: %v\n%s", res, readLog(img2+".restore.log"))
	}
	tg.expectPassed(res.code, "after two checkpoints")
	if t.Failed() {
		t.Logf("restore: %v%s", res, readLog(img2+".restore.log"))
	}
}

// TestSocketPeerOutsideTree: a process connected to a socket the test holds
// cannot be dumped (its peer would not come back); the dump says which fd
// and socket, and the process goes on unharmed.
func TestSocketPeerOutsideTree(t *testing.T) {
	requireCryo(t)
	path := filepath.Join(t.TempDir(), "outside.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	tg := startTarget(t, "sockets", "outside="+path)
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(readyTimeout):
		t.Fatal("the target did not connect")
	}
	expectRefused(t, tg, `OUTSIDE fd=(\d+) link=(\S+)`, "peer outside the tree")
}

// TestSocketBacklogWithData: a connection waiting in a backlog whose client
// already sent data cannot be dumped (nothing reads an unaccepted
// connection's data without accepting it): refused clearly, unharmed.
func TestSocketBacklogWithData(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "sockets", "backlog-data")
	expectRefused(t, tg, "", "cannot be read without accept()")
}

// expectRefused dumps tg, which must fail naming the fd and link the target
// reported (when re is given) and why; then the target must pass its checks.
func expectRefused(t *testing.T, tg *target, re, why string) {
	t.Helper()
	img := filepath.Join(tg.dir, "img")
	if err := os.MkdirAll(img, 0o700); err != nil {
		t.Fatal(err)
	}
	r := dump(t, tg.pid, img)
	if r.timedOut {
		t.Fatalf("dump hung: %v", r)
	}
	if r.code == 0 {
		t.Fatalf("dump succeeded; it must refuse (%s): %v", why, r)
	}
	t.Logf("refused: %s", strings.SplitN(r.output, "\n", 2)[0])
	if !strings.Contains(r.output, why) || !strings.Contains(r.output, "not supported") {
		t.Errorf("error must say %q:\n%v", why, r)
	}
	if !regexp.MustCompile(`\bfd \d+ \(socket:\[\d+\], unix \w+, .*\) of pid \d+`).MatchString(r.output) {
		t.Errorf("error must name the fd, the socket and the pid:\n%v", r)
	}
	if re != "" {
		m := regexp.MustCompile(re).FindStringSubmatch(tg.log())
		if m == nil {
			t.Fatalf("target did not report its fd:\n%s", tg.log())
		}
		if want := "fd " + m[1] + " (" + m[2] + ","; !strings.Contains(r.output, want) {
			t.Errorf("error must name %q:\n%v", want, r)
		}
	}
	if _, err := os.Stat(filepath.Join(img, "inventory.img")); err == nil {
		t.Errorf("a failed dump left %s/inventory.img", img)
	}
	select {
	case <-tg.done:
		t.Fatalf("target died during the failed dump: %v", tg.state)
	default:
	}
	expectAliveUnstopped(t, tg.pid, "after the failed dump")
	tg.fire()
	st, ok := tg.waitExit(20 * time.Second)
	if !ok {
		t.Fatal("target did not finish its checks within 20 s")
	}
	tg.expectPassed(st.ExitCode(), "after the refused dump")
}
