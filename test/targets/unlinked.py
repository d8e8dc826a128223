"""unlinked: a process holding an object restore could not reach again by
the name it shows, for the refusal tests. Started as `unlinked.py TRIGGER
MODE` (protocol: test/targets/common.h). MODE is what it holds:

  cwd-removed   a cwd whose directory was removed
  dir-removed   an fd on a removed directory
  fifo-deleted  an fd on a FIFO whose name was deleted
  dev-deleted   an fd on a character device node (/dev/null's) deleted
  tmpfile       an O_TMPFILE file
  setown        a pipe with O_ASYNC and an owner (F_SETOWN)
  linked        a file deleted by the name it was opened by, still linked
                by another name
  mqueue        a POSIX message queue (its fd shows /NAME)
  epoll-closed  an epoll set watching an fd closed since (a dup keeps the
                file open)
  pipe-reopen   a pipe end opened a second time through /proc/self/fd: two
                open file descriptions of one end, which cryo restores
  ptmx          the master of a pseudo-terminal pair (as tmux holds)

After the trigger it checks that what it held is still there, as it was:
the refused dump must have left it untouched.
"""
import fcntl
import os
import stat
import sys
import time

failed = 0


def check(name, ok, detail=""):
    global failed
    if ok:
        print(f"PASS {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name}: {detail}", flush=True)


def main():
    trigger, mode = sys.argv[1], sys.argv[2]
    d = os.path.join(os.path.dirname(trigger), "work")
    os.makedirs(d, exist_ok=True)
    print(f"PID {os.getpid()}", flush=True)
    fd = -1
    want = None  # the file type fstat must still show
    if mode == "cwd-removed":
        p = os.path.join(d, "gone")
        os.mkdir(p)
        os.chdir(p)
        os.rmdir(p)
        fd, want = os.open(".", os.O_RDONLY | os.O_DIRECTORY), stat.S_IFDIR
    elif mode == "dir-removed":
        p = os.path.join(d, "gone")
        os.mkdir(p)
        fd, want = os.open(p, os.O_RDONLY | os.O_DIRECTORY), stat.S_IFDIR
        os.rmdir(p)
    elif mode == "fifo-deleted":
        p = os.path.join(d, "fifo")
        os.mkfifo(p)
        fd, want = os.open(p, os.O_RDWR | os.O_NONBLOCK), stat.S_IFIFO
        os.unlink(p)
        os.write(fd, b"in the fifo")
    elif mode == "dev-deleted":
        p = os.path.join(d, "null")
        os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        fd, want = os.open(p, os.O_RDWR), stat.S_IFCHR
        os.unlink(p)
    elif mode == "tmpfile":
        fd, want = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600), stat.S_IFREG
        os.write(fd, b"tmp data")
    elif mode == "setown":
        fd, w = os.pipe()
        want = stat.S_IFIFO
        fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    elif mode == "linked":
        p = os.path.join(d, "first")
        fd, want = os.open(p, os.O_CREAT | os.O_RDWR, 0o600), stat.S_IFREG
        os.link(p, os.path.join(d, "second"))
        os.unlink(p)
    elif mode == "mqueue":
        import ctypes
        rt = ctypes.CDLL("librt.so.1", use_errno=True)
        name = f"/cryo-test-{os.getpid()}".encode()
        fd = rt.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, None)
        if fd < 0:
            print(f"SETUP-ERROR mq_open: {os.strerror(ctypes.get_errno())}", flush=True)
            sys.exit(2)
        rt.mq_unlink(name)  # nothing to clean up after the test; the fd keeps it
        want = stat.S_IFREG
    elif mode == "epoll-closed":
        import select
        ep = select.epoll()
        r, w = os.pipe()
        ep.register(r, select.EPOLLIN)
        fd, want = os.dup(r), stat.S_IFIFO
        os.close(r)
        os.write(w, b"x")
    elif mode == "pipe-reopen":
        r, w = os.pipe()
        fd, want = os.open(f"/proc/self/fd/{r}", os.O_RDONLY | os.O_NONBLOCK), stat.S_IFIFO
        os.write(w, b"through both")
    elif mode == "ptmx":
        fd, want = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY), stat.S_IFCHR
    else:
        print(f"SETUP-ERROR unknown mode {mode}", flush=True)
        sys.exit(2)
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    print("READY", flush=True)
    while not os.path.exists(trigger):
        time.sleep(0.01)
    print(f"VERIFY pid={os.getpid()}", flush=True)
    st = os.fstat(fd)
    named = mode in ("setown", "linked", "mqueue", "epoll-closed", "pipe-reopen", "ptmx")
    check("still-held", stat.S_IFMT(st.st_mode) == want and (named or st.st_nlink == 0),
          f"mode {st.st_mode:o} nlink {st.st_nlink}")
    check("flags", fcntl.fcntl(fd, fcntl.F_GETFL) == flags, f"{fcntl.fcntl(fd, fcntl.F_GETFL):o}, was {flags:o}")
    if mode == "cwd-removed":
        check("cwd", os.readlink("/proc/self/cwd").endswith("(deleted)"), os.readlink("/proc/self/cwd"))
    if mode == "fifo-deleted":
        check("fifo-data", os.read(fd, 100) == b"in the fifo")
    if mode == "tmpfile":
        check("tmpfile-data", os.pread(fd, 100, 0) == b"tmp data")
    if mode == "setown":
        check("owner", fcntl.fcntl(fd, fcntl.F_GETOWN) == os.getpid())
    if mode == "epoll-closed":
        check("epoll-ready", ep.poll(0) != [], "the watch on the closed fd no longer fires")
    if mode == "pipe-reopen":
        check("pipe-data", os.read(r, 100) == b"through both", "the first description reads nothing")
        check("pipe-second-nonblock", fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK != 0)
        check("pipe-first-blocking", fcntl.fcntl(r, fcntl.F_GETFL) & os.O_NONBLOCK == 0)
    print(f"RESULT {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


main()
