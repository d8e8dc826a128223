package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// unixCreds lists, fd by fd, the owner and the peer credentials
// (SO_PEERCRED uid and gid) of every UNIX socket of pid, read through
// copies of its fds.
func unixCreds(t *testing.T, pid int) string {
	t.Helper()
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pfd)
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fd, err := unix.PidfdGetfd(pfd, n, 0)
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Fstat(fd, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFSOCK {
			if dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil && dom == unix.AF_UNIX {
				line := fmt.Sprintf("fd %d owner %d:%d", n, st.Uid, st.Gid)
				if c, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil && c.Pid != 0 {
					line += fmt.Sprintf(" peer %d:%d", c.Uid, c.Gid)
				}
				out = append(out, line)
			}
		}
		unix.Close(fd)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// TestUnixSocketsOtherUser: an ordinary user's process with socketpairs,
// named sockets and a listener, dumped and restored by root, has its
// sockets owned by its user and telling their peers its uid and gid, as
// before; restore makes them before the process has its credentials, so
// it takes the process's ids for that (a restore that did not would tell
// the process's peers it is root).
func TestUnixSocketsOtherUser(t *testing.T) {
	requireCryo(t)
	env := setupNonRoot(t)
	copyFile(t, filepath.Join(repo, "bin", "targets", "sockets"), filepath.Join(env.bin, "sockets"), 0o755)
	tg := env.startTarget(t, "sockets")
	before := unixCreds(t, tg.pid)
	if before == "" {
		t.Fatal("the sockets target holds no UNIX socket")
	}
	img := filepath.Join(tg.dir, "img")
	mustDump(t, tg.pid, img)
	tg.expectKilled()
	reapOrphans(t)
	restoreDetached(t, tg, img)
	if after := unixCreds(t, tg.pid); after != before {
		t.Errorf("UNIX sockets after restore:\n%s\nwere:\n%s", after, before)
	}
	tg.fire()
	ws, err := waitReaped(tg.pid, exitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	tg.expectPassed(ws.ExitStatus(), "after a root restore")
}
