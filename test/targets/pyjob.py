#!/usr/bin/env python3
"""pyjob: the Python test target of cryo's e2e tests.

Builds a dict/list state, hashes it, and follows the protocol of
test/targets/common.h: print READY, poll for the trigger file (argv[1]),
then check the state, the pid and a counting thread, printing PASS/FAIL lines.
"""
import hashlib
import os
import sys
import threading
import time

failed = 0


def check(name, ok, detail=""):
    global failed
    if ok:
        print(f"PASS {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name}: {detail}", flush=True)


def digest(state):
    return hashlib.sha256(repr(state).encode()).hexdigest()


def main():
    trigger = sys.argv[1]
    pid = os.getpid()
    print(f"PID {pid}", flush=True)
    state = {
        "squares": {i: i * i for i in range(20000)},
        "words": [f"w{i:05d}" * (i % 7 + 1) for i in range(5000)],
        "nested": [{"k": i, "v": [j * 0.5 for j in range(i % 13)]} for i in range(3000)],
        "blob": bytes(range(256)) * 4096,
    }
    before = digest(state)
    counter = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            counter[0] += 1
            time.sleep(0.001)

    t = threading.Thread(target=count, daemon=True)
    t.start()
    time.sleep(0.05)
    at_ready = counter[0]
    print(f"TID counter {t.native_id}", flush=True)
    print("READY", flush=True)
    while not os.path.exists(trigger):
        time.sleep(0.005)
    print(f"VERIFY pid={os.getpid()}", flush=True)
    check("pid", os.getpid() == pid, f"getpid {os.getpid()}, was {pid}")
    check("state-hash", digest(state) == before, "sha256 of the state changed")
    c1 = counter[0]
    time.sleep(0.1)
    check("thread-counts", counter[0] > c1 >= at_ready, f"{at_ready} -> {c1} -> {counter[0]}")
    stop.set()
    t.join(5)
    check("thread-joins", not t.is_alive(), "counter thread still running")
    print(f"RESULT {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
