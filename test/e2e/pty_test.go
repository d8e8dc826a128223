package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/image/imagetest"
)

// ptyName is the slave the pty target reported (its PTY line).
func ptyName(t *testing.T, tg *target) string {
	t.Helper()
	for _, line := range strings.Split(tg.log(), "\n") {
		if name, ok := strings.CutPrefix(line, "PTY "); ok {
			return name
		}
	}
	t.Fatalf("pty target printed no PTY line:\n%s", tg.log())
	return ""
}

// critDecodes fails the test unless CRIU's crit decodes each named file of
// img and finds its magic in it.
func critDecodes(t *testing.T, img string, files map[string]string) {
	t.Helper()
	crit := imagetest.Crit(t)
	for name, magic := range files {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, crit, "decode", "-i", filepath.Join(img, name)).CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), `"`+magic+`"`) {
			t.Errorf("crit decode %s: %v\n%s", name, err, lastLines(string(out), 10))
		}
	}
}

// TestPty: a pseudo-terminal pair the tree holds comes back as it was
// (test/targets/pty.c checks it all itself): the slave's index and name,
// termios, window size, packet, locked and exclusive modes, the slave as
// its session's controlling terminal with a child's group in the
// foreground, /dev/tty in that child, and the bytes neither side had read,
// a canonical line ended by VEOL and an unfinished line among them. The
// harness compares /proc before and after; checkpointed twice. crit reads
// tty-info.img and tty-data.img.
func TestPty(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "pty")
	name := ptyName(t, tg)
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	critDecodes(t, img, map[string]string{"tty-info.img": "TTY_INFO", "tty-data.img": "TTY_DATA", "files.img": "FILES"})
	if _, err := os.Stat(name); err == nil {
		t.Fatalf("%s still exists after the dump killed the tree", name)
	}
	restoreDetached(t, tg, img)
	if n := fdsOn(tg.pid, name); n != 1 {
		t.Errorf("the restored target has %d fds on %s, want 1", n, name)
	}
	res, img2 := cycleAgain(t, tg)
	if res.timedOut || res.code != 0 {
		t.Fatalf("pty after two checkpoints: %v\n%s\n%s", res, tg.log(), readLog(img2+".restore.log"))
	}
	tg.expectPassed(0, "after two checkpoints")
}

// TestPtyRaw: a slave that is not canonical (no ISIG, no ICRNL) comes back
// with its queue of bytes, ^C and DEL among them, as it was; the harness
// compares /proc before and after.
func TestPtyRaw(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "pty", "raw")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	restoreAndVerify(t, tg, img)
}

// TestPtyHangup: a pty whose slave was closed after use (its master reads
// what is left, then EIO, and polls POLLHUP) comes back so, with the
// slave's queue, termios and node as they were; checkpointed twice, /proc
// compared.
func TestPtyHangup(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "pty", "hup")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	restoreDetached(t, tg, img)
	res, img2 := cycleAgain(t, tg)
	if res.timedOut || res.code != 0 {
		t.Fatalf("pty hup after two checkpoints: %v\n%s\n%s", res, tg.log(), readLog(img2+".restore.log"))
	}
	tg.expectPassed(0, "after two checkpoints")
}

// TestPtyHungUp: slave fds whose master was closed (hung up: read 0,
// write EIO, their name gone) come back hung up, as CRIU brings them back:
// the pair made at their index, the slaves opened, the master closed.
// Checkpointed twice, /proc compared.
func TestPtyHungUp(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "pty", "hung")
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	critDecodes(t, img, map[string]string{"tty-info.img": "TTY_INFO"})
	restoreDetached(t, tg, img)
	res, img2 := cycleAgain(t, tg)
	if res.timedOut || res.code != 0 {
		t.Fatalf("pty hung after two checkpoints: %v\n%s\n%s", res, tg.log(), readLog(img2+".restore.log"))
	}
	tg.expectPassed(0, "after two checkpoints")
}

// TestPtyRefused: what restore could not give back is refused at dump,
// named, and the pty is left exactly as it was (the target then reads its
// queues and finds them whole): a queued line ended by the EOF character
// (tty-data.img holds bytes, and the EOF character is not one), and a
// process of the terminal's session that has no controlling terminal
// (forked before its leader took it: a restored process gets the terminal
// from its leader at fork).
func TestPtyRefused(t *testing.T) {
	requireCryo(t)
	for _, c := range []struct{ mode, want string }{
		{"eof", "an unread line ended by the end-of-file character"},
		{"early", "forked before the leader took it"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			tg := startTarget(t, "pty", c.mode)
			name := ptyName(t, tg)
			r := dump(t, tg.pid, filepath.Join(tg.dir, "img"))
			if r.timedOut || r.code == 0 || !strings.Contains(r.output, "pseudo-terminal "+name) ||
				!strings.Contains(r.output, c.want) || !strings.Contains(r.output, "not supported") {
				t.Fatalf("dump of a pty with %s: want a refusal naming %s and %q, got %v", c.mode, name, c.want, r)
			}
			tg.expectUnharmed("after the refused dump")
		})
	}
}

// TestPtyIndexTaken: a restore whose pty index another terminal holds
// fails before anything runs, naming the slave, and leaves nothing.
func TestPtyIndexTaken(t *testing.T) {
	requireCryo(t)
	tg := startTarget(t, "pty")
	name := ptyName(t, tg)
	idx, err := strconv.Atoi(strings.TrimPrefix(name, "/dev/pts/"))
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	// Take the index: the host's devpts gives the lowest free one.
	var held []*os.File
	defer func() {
		for _, f := range held {
			f.Close()
		}
	}()
	for got := -1; got != idx; {
		f, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, f)
		if got, err = unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPTN); err != nil || got > idx || len(held) > 4096 {
			t.Fatalf("could not take pty index %d (got %d, %v)", idx, got, err)
		}
	}
	for _, f := range held[:len(held)-1] {
		f.Close()
	}
	held = held[len(held)-1:]
	r := runCryo(t, restoreTimeout, restoreArgs(img, "-d")...)
	if r.code == 0 || !strings.Contains(r.output, "pty slave "+name+": index taken at restore") {
		t.Fatalf("restore with pty index %d taken: want a refusal naming %s, got %v", idx, name, r)
	}
	if runsTarget(tg.pid, tg.name) {
		t.Fatalf("pid %d runs after a refused restore", tg.pid)
	}
	// Given back, the index restores.
	held[0].Close()
	held = nil
	restoreDetached(t, tg, img)
	tg.fire()
	ws, err := waitReaped(tg.pid, restoreTimeout)
	if err != nil {
		t.Fatal(err)
	}
	tg.expectPassed(ws.ExitStatus(), "after the index was given back")
}

var tmuxCount = regexp.MustCompile(`count (\d+)`)

// TestTmux: a tmux server (Debian's), started detached on a private
// socket, with two windows: an interactive bash running a counter loop in
// the background, and top. The server's whole tree (server, shell, loop,
// top) is checkpointed, killed and restored, twice; each time a new client
// sees both windows, the counter goes on from where it was with no number
// lost or repeated, top keeps refreshing, and the shell answers what
// send-keys types. The harness compares /proc before and after.
func TestTmux(t *testing.T) {
	requireCryo(t)
	bin, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("CRYO_TEST_STRICT") != "" {
			t.Fatalf("tmux (make deps installs it): %v", err)
		}
		t.Skipf("tmux is not installed (make deps installs it): %v", err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "sock")
	var pid int // the server's
	tmux := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"-S", sock}, args...)...)
		cmd.Env = append(os.Environ(), "TERM=xterm", "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("tmux %s: %v\n%s\nserver %d: %s\n%s", strings.Join(args, " "), err, out, pid, procState(pid), log)
		}
		return string(out)
	}
	// The server in the foreground (-D), a child of the test's in a session
	// of its own, as a daemon would be: its exit is the test's to see.
	srv := exec.Command(bin, "-S", sock, "-f", "/dev/null", "-D")
	srv.Env = append(os.Environ(), "TERM=xterm", "HOME="+dir)
	srv.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	srvLog, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer srvLog.Close()
	srv.Stdout, srv.Stderr = srvLog, srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	pid = srv.Process.Pid
	exited := make(chan struct{})
	go func() { srv.Wait(); close(exited) }()
	t.Cleanup(func() {
		kids := treePids(pid)
		for i := len(kids) - 1; i >= 0; i-- {
			if i == 0 || strings.Contains(readCmdline(pid), sock) {
				syscall.Kill(kids[i], syscall.SIGKILL)
			}
		}
		select {
		case <-exited:
		case <-time.After(exitTimeout):
		}
		for _, k := range kids[1:] {
			waitReaped(k, exitTimeout)
		}
	})
	for deadline := time.Now().Add(readyTimeout); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tmux -D made no socket in %v", readyTimeout)
		}
	}
	// Its ptys above the lowest free indices, which other tests on the
	// machine take and give back: one could take an index back between a
	// dump and its restore (which then refuses, rightly).
	var low []*os.File
	for i := 0; i < 8; i++ {
		if f, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0); err == nil {
			low = append(low, f)
		}
	}
	tmux("new-session", "-d", "-s", "cryo", "-x", "120", "-y", "40", "env PS1='$ ' HISTFILE= bash --norc --noprofile -i")
	tmux("send-keys", "-t", "cryo:0", "i=0; while :; do i=$((i+1)); echo count $i; sleep 0.2; done &", "Enter")
	tmux("new-window", "-t", "cryo", "top -d 1")
	for _, f := range low {
		f.Close()
	}
	pane := func(w string) string { return tmux("capture-pane", "-p", "-S", "-", "-t", "cryo:"+w) }
	// counts are the counter's numbers in window 0, in order, checked
	// consecutive: none lost, none repeated.
	counts := func() []int {
		t.Helper()
		var out []int
		for _, m := range tmuxCount.FindAllStringSubmatch(pane("0"), -1) {
			n, _ := strconv.Atoi(m[1])
			if len(out) > 0 && n != out[len(out)-1]+1 {
				t.Fatalf("the counter went from %d to %d:\n%s", out[len(out)-1], n, pane("0"))
			}
			out = append(out, n)
		}
		return out
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(readyTimeout); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v\nwindow 0:\n%s\nwindow 1:\n%s", what, readyTimeout, pane("0"), pane("1"))
			}
		}
	}
	topClock := regexp.MustCompile(`top - (\d\d:\d\d:\d\d)`)
	clock := func() string {
		m := topClock.FindStringSubmatch(pane("1"))
		if m == nil {
			return ""
		}
		return m[1]
	}
	waitFor("the counter counts", func() bool { return len(counts()) >= 3 })
	waitFor("top shows", func() bool { return clock() != "" })

	for cycle := 1; cycle <= 2; cycle++ {
		before := counts()
		last, topWas := before[len(before)-1], clock()
		// The clients are gone once the server has seen them go: a
		// connection whose peer has closed is refused at dump.
		waitFor("the server has only its listening socket", func() bool { return sockets(pid) == 1 })
		img := filepath.Join(t.TempDir(), "img")
		mustDump(t, pid, img)
		for deadline := time.Now().Add(exitTimeout); !reapIfChild(pid); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("tmux server %d outlived its dump (state %s)", pid, procState(pid))
			}
		}
		reapOrphans(t)
		if cycle == 1 {
			critDecodes(t, img, map[string]string{"tty-info.img": "TTY_INFO", "files.img": "FILES"})
		}
		w := armState(t, img, "pre-resume", pid)
		cp := startCryo(t, restoreArgs(img, "-d")...)
		expectSameState(t, img, w, cp.done)
		if r := cp.wait(restoreTimeout); r.code != 0 {
			t.Fatalf("restore %d: %v\n%s", cycle, r, readLog(img+".restore.log"))
		}
		if wins := tmux("list-windows", "-t", "cryo", "-F", "#{window_index} #{pane_current_command}"); !strings.Contains(wins, "0 bash") || !strings.Contains(wins, "1 top") {
			t.Fatalf("restore %d: list-windows shows\n%s", cycle, wins)
		}
		waitFor(fmt.Sprintf("restore %d: the counter goes on past %d", cycle, last), func() bool {
			c := counts()
			return len(c) > 0 && c[len(c)-1] >= last+3
		})
		waitFor(fmt.Sprintf("restore %d: top refreshes past %s", cycle, topWas), func() bool {
			c := clock()
			return c != "" && c != topWas
		})
		marker := fmt.Sprintf("answer%d", 6*7*cycle)
		tmux("send-keys", "-t", "cryo:0", fmt.Sprintf("echo answer$((6*7*%d))", cycle), "Enter")
		waitFor(fmt.Sprintf("restore %d: the shell answers %s", cycle, marker), func() bool {
			return regexp.MustCompile(`(?m)^` + marker + `\s*$`).MatchString(pane("0"))
		})
	}
}

// sockets counts the socket fds of pid.
func sockets(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// fdsOn counts the fds of pid whose link is name.
func fdsOn(pid int, name string) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && l == name {
			n++
		}
	}
	return n
}
