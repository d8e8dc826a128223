#!/usr/bin/env python3
"""pylocks: a Python program holding file locks and an sqlite database in WAL mode.

The case of cryo's issue #10: it holds an exclusive flock on app.lock, a
POSIX write lock on bytes 10-19 and a read lock on bytes 40-49 of records,
and data.db in WAL mode (stdlib sqlite3) with a row committed before the
dump, one connection idle and another inside a read transaction. sqlite
keeps its own POSIX locks: a shared lock on data.db, the dead-man switch on
byte 128 of data.db-shm (mmap'd) that tells other connections the WAL index
is in use, and the read mark of the open transaction. If those locks are
gone after restore, another process takes the database for its own: it
checkpoints and deletes the WAL, and what this program commits afterwards
never reaches the disk.

Protocol of test/targets/common.h: print READY, poll for the trigger file
(argv[1]); then commit a second row, print "committed", check what it holds
from inside (a child process fails to take each lock), print HELD, and
wait for TRIGGER.done before exiting, holding everything, so that the test
can read the database from disk while this program lives.
"""
import fcntl
import os
import sqlite3
import struct
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


def getlk(fd, start, length):
    """F_GETLK for a write lock: (type, start, len, pid) of what stops it."""
    fl = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
    t, _, s, n, pid = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, fl))
    return t, s, n, pid


def from_child(fn):
    """Runs fn in a child, another lock owner; returns what it printed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.write(w, repr(fn()).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while True:
        b = os.read(r, 4096)
        if not b:
            break
        out += b
    os.close(r)
    os.waitpid(pid, 0)
    return out.decode()


def main():
    trigger = sys.argv[1]
    d = os.path.dirname(trigger)
    pid = os.getpid()
    print(f"PID {pid}", flush=True)

    app = open(os.path.join(d, "app.lock"), "w")
    fcntl.flock(app, fcntl.LOCK_EX | fcntl.LOCK_NB)
    rec = os.open(os.path.join(d, "records"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(rec, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 10)
    fcntl.lockf(rec, fcntl.LOCK_SH | fcntl.LOCK_NB, 10, 40)

    db = os.path.join(d, "data.db")
    c1 = sqlite3.connect(db, isolation_level=None)
    mode = c1.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        print(f"SETUP-ERROR journal_mode {mode}", flush=True)
        sys.exit(2)
    c1.execute("CREATE TABLE t(v TEXT)")
    c1.execute("BEGIN")
    c1.execute("INSERT INTO t VALUES ('before-dump')")
    c1.execute("COMMIT")
    c2 = sqlite3.connect(db, isolation_level=None)
    c2.execute("BEGIN")
    seen = c2.execute("SELECT count(*) FROM t").fetchone()[0]

    print("READY", flush=True)
    while not os.path.exists(trigger):
        time.sleep(0.005)
    print(f"VERIFY pid={os.getpid()}", flush=True)
    check("pid", os.getpid() == pid, f"getpid {os.getpid()}, was {pid}")

    c1.execute("BEGIN")
    c1.execute("INSERT INTO t VALUES ('after-restore')")
    c1.execute("COMMIT")
    print("committed", flush=True)
    rows = [r[0] for r in c1.execute("SELECT v FROM t ORDER BY rowid")]
    check("rows", rows == ["before-dump", "after-restore"], repr(rows))
    snap = c2.execute("SELECT count(*) FROM t").fetchone()[0]
    check("read-transaction-snapshot", snap == seen == 1, f"{seen} then {snap}")

    def try_flock():
        with open(os.path.join(d, "app.lock")) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return "taken"
            except BlockingIOError:
                return "busy"

    got = from_child(try_flock)
    check("flock-held", got == "'busy'", got)
    got = from_child(lambda: [getlk(rec, 10, 10), getlk(rec, 40, 10), getlk(rec, 20, 20)])
    want = repr([(fcntl.F_WRLCK, 10, 10, pid), (fcntl.F_RDLCK, 40, 10, pid), (fcntl.F_UNLCK, 20, 20, 0)])
    check("posix-held", got == want, f"{got}, want {want}")
    # The child opens -shm itself: a close of any fd of the file here would
    # drop sqlite's locks on it, as restore must not either.
    got = from_child(lambda: getlk(os.open(db + "-shm", os.O_RDWR), 128, 1))
    check("sqlite-dms-held", got == repr((fcntl.F_RDLCK, 128, 1, pid)), got)

    print("HELD", flush=True)
    done = trigger + ".done"
    while not os.path.exists(done):
        time.sleep(0.005)
    c2.execute("COMMIT")
    c2.close()
    c1.close()
    print(f"RESULT {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
