#!/usr/bin/env python3
"""unixclient: a client of a UNIX stream server outside the dumped tree.

argv: TRIGGER PATH. Connects to PATH, then, until the trigger file exists,
sends "c N\n" with N counting from 0 every few milliseconds and reads the
server's "s M\n" lines, which must count from 0 with none missing, repeated
or out of order. On the trigger it prints PASS or FAIL for that stream and
for the connection (no EOF, no error) and exits with 0 or 1.
"""
import os
import select
import socket
import sys


def main():
    trigger, path = sys.argv[1], sys.argv[2]
    print(f"PID {os.getpid()}", flush=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    sent, expect, buf, bad = 0, 0, b"", ""
    print("READY", flush=True)
    while not os.path.exists(trigger) and not bad:
        try:
            s.sendall(b"c %d\n" % sent)
        except OSError as e:
            bad = f"send: {e}"
            break
        sent += 1
        r, _, _ = select.select([s], [], [], 0.003)
        if not r:
            continue
        try:
            d = s.recv(65536)
        except OSError as e:
            bad = f"recv: {e}"
            break
        if not d:
            bad = "EOF from the server"
            break
        buf += d
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            n = int(line.split()[1])
            if n != expect:
                bad = f"got s {n}, want s {expect}"
            expect += 1
    if bad or expect == 0:
        print(f"FAIL stream: {bad or 'nothing from the server'} (sent {sent}, got {expect})", flush=True)
        return 1
    print(f"PASS stream (sent {sent}, got {expect})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
