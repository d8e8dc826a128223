package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
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
// cannot be dumped with --leave-running (the tree keeps the socket, so
// nothing could stand for it at restore); the dump says which fd and why,
// and the process runs on.
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
	// A plain dump keeps it (TestUnixPeerOutside); with --leave-running
	// the tree keeps it, and nothing can stand for it at restore.
	expectRefused(t, tg, `OUTSIDE fd=(\d+) link=(\S+)`, "peer outside the tree", "--leave-running")
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
func expectRefused(t *testing.T, tg *target, re, why string, extra ...string) {
	t.Helper()
	img := filepath.Join(tg.dir, "img")
	if err := os.MkdirAll(img, 0o700); err != nil {
		t.Fatal(err)
	}
	r := dump(t, tg.pid, img, extra...)
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

// unixServer is a UNIX stream server run by the test, outside any dumped
// tree: it reads "c N" lines from one client, which must count from 0
// with nothing lost, repeated or reordered, and writes "s M" lines to it.
type unixServer struct {
	path    string
	ln      *net.UnixListener
	mu      sync.Mutex
	got     int    // c lines read
	sent    int    // s lines written
	problem string // the first thing wrong on the connection
}

func startUnixServer(t *testing.T) *unixServer {
	t.Helper()
	us := &unixServer{path: filepath.Join(t.TempDir(), "srv.sock")}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: us.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	us.ln = ln
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		t.Cleanup(func() { c.Close() })
		go func() {
			for {
				us.mu.Lock()
				n := us.sent
				us.mu.Unlock()
				if _, err := fmt.Fprintf(c, "s %d\n", n); err != nil {
					us.fail(fmt.Sprintf("write: %v", err))
					return
				}
				us.mu.Lock()
				us.sent++
				us.mu.Unlock()
				time.Sleep(3 * time.Millisecond)
			}
		}()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var n int
			if _, err := fmt.Sscanf(sc.Text(), "c %d", &n); err != nil {
				us.fail(fmt.Sprintf("line %q", sc.Text()))
				return
			}
			us.mu.Lock()
			if n != us.got && us.problem == "" {
				us.problem = fmt.Sprintf("got c %d, want c %d", n, us.got)
			}
			us.got++
			us.mu.Unlock()
		}
		us.fail(fmt.Sprintf("EOF or error after %d lines: %v", us.count(), sc.Err()))
	}()
	return us
}

func (us *unixServer) fail(why string) {
	us.mu.Lock()
	defer us.mu.Unlock()
	if us.problem == "" {
		us.problem = why
	}
}

func (us *unixServer) count() int {
	us.mu.Lock()
	defer us.mu.Unlock()
	return us.got
}

func (us *unixServer) trouble() string {
	us.mu.Lock()
	defer us.mu.Unlock()
	return us.problem
}

// TestUnixPeerOutside: a Python client of a UNIX stream server outside the
// tree (the test) talks both ways, numbering its lines, throughout two
// checkpoints. The dump's keeper holds the client's socket while it is
// dumped, so the server sees no EOF; the restored client is on that very
// socket: neither side loses, repeats or reorders a line, and the server
// goes on hearing from it. With --leave-running the socket is refused, by
// name (the tree keeps it).
func TestUnixPeerOutside(t *testing.T) {
	requireCryo(t)
	{
		us := startUnixServer(t)
		tg := startTarget(t, "unixclient", us.path)
		img := filepath.Join(t.TempDir(), "refused")
		if r := dump(t, tg.pid, img, "--leave-running"); r.code == 0 || !strings.Contains(r.output, "peer outside the tree") {
			t.Fatalf("dump --leave-running of a client of an outside server: %v, want a refusal naming the peer", r)
		}
		tg.expectUnharmed("after the refused dump")
	}
	us := startUnixServer(t)
	tg := startTarget(t, "unixclient", us.path)
	time.Sleep(100 * time.Millisecond)

	for round := 1; round <= 2; round++ {
		img := filepath.Join(t.TempDir(), "img")
		before := us.count()
		mustDump(t, tg.pid, img)
		if round == 1 {
			tg.expectKilled()
		} else {
			waitReaped(tg.pid, exitTimeout)
		}
		reapOrphans(t)
		time.Sleep(30 * time.Millisecond)
		if p := us.trouble(); p != "" {
			t.Fatalf("round %d: while the client was dumped the server saw: %s", round, p)
		}
		restoreDetached(t, tg, img)
		deadline := time.Now().Add(restoreTimeout)
		for us.count() < before+20 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the restored client sent %d lines in %v", round, us.count()-before, restoreTimeout)
			}
			time.Sleep(5 * time.Millisecond)
		}
		expectNoKeeper(t)
	}
	tg.fire()
	deadline := time.Now().Add(exitTimeout)
	for !strings.Contains(tg.log(), "PASS stream") && !strings.Contains(tg.log(), "FAIL") {
		if time.Now().After(deadline) {
			t.Fatalf("the restored client said nothing:\n%s", tg.log())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(tg.log(), "PASS stream") {
		t.Fatalf("client: %s", tg.log())
	}
	if p := us.trouble(); p != "" && !strings.HasPrefix(p, "EOF") {
		t.Fatalf("the server saw: %s", p)
	}
}
