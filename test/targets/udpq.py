#!/usr/bin/env python3
"""udpq: UDP sockets with datagrams queued, not read, across a checkpoint.

argv: TRIGGER. Makes three receiving sockets and the sockets that send to
them, all its own: an IPv4 socket bound to 127.0.0.1 (datagrams from two
senders, one of 60000 bytes), a dual-stack IPv6 socket bound to [::] (one
datagram from an IPv4 sender, one from ::1), and an IPv4 socket connected
to a peer (two datagrams from that peer). It reads none of them, prints
READY and waits for the trigger file. Then it reads every queue and checks
it holds exactly the datagrams sent, in order, each from its sender, and
nothing more; and that each socket still takes a new datagram.
"""
import errno
import os
import socket
import sys
import time


def bound(family, addr):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(addr)
    return s


def main():
    trigger = sys.argv[1]
    print(f"PID {os.getpid()}", flush=True)
    r4 = bound(socket.AF_INET, ("127.0.0.1", 0))
    r6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    r6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    r6.bind(("::", 0))
    a = bound(socket.AF_INET, ("127.0.0.2", 0))
    b = bound(socket.AF_INET, ("127.0.0.3", 0))
    c6 = bound(socket.AF_INET6, ("::1", 0))
    peer = bound(socket.AF_INET, ("127.0.0.4", 0))
    conn = bound(socket.AF_INET, ("127.0.0.1", 0))
    conn.connect(peer.getsockname())
    peer.connect(conn.getsockname())

    p4, p6 = r4.getsockname()[1], r6.getsockname()[1]
    want = {  # receiver -> [(sender address, bytes)]
        "r4": [], "r6": [], "conn": [],
    }
    def send(sender, rname, dst, data):
        sender.sendto(data, dst)
        want[rname].append((sender.getsockname()[:2], data))

    send(a, "r4", ("127.0.0.1", p4), b"first from a")
    send(b, "r4", ("127.0.0.1", p4), bytes(range(256)) * 234 + b"tail")  # 59908 bytes
    send(a, "r4", ("127.0.0.1", p4), b"third, from a again")
    send(a, "r6", ("127.0.0.1", p6), b"v4 to a dual-stack socket")
    send(c6, "r6", ("::1", p6), b"v6 from ::1")
    peer.send(b"connected one")
    want["conn"].append((peer.getsockname()[:2], b"connected one"))
    peer.send(b"connected two")
    want["conn"].append((peer.getsockname()[:2], b"connected two"))
    time.sleep(0.1)  # every datagram delivered before READY
    print("READY", flush=True)
    while not os.path.exists(trigger):
        time.sleep(0.01)

    socks = {"r4": r4, "r6": r6, "conn": conn}
    failed = 0
    for name, s in socks.items():
        got = []
        s.setblocking(False)
        while True:
            try:
                data, addr = s.recvfrom(65536)
            except OSError as e:
                if e.errno != errno.EAGAIN:
                    got.append(("error", str(e)))
                break
            host = addr[0]
            if host.startswith("::ffff:"):
                host = host[len("::ffff:"):]
            got.append(((host, addr[1]), data))
        exp = [((h, p), d) for (h, p), d in want[name]]
        if got == exp:
            print(f"PASS queue-{name} ({len(got)} datagrams)", flush=True)
        else:
            failed += 1
            print(f"FAIL queue-{name}: got {[(a, len(d) if isinstance(d, bytes) else d) for a, d in got]}, "
                  f"want {[(a, len(d)) for a, d in exp]}", flush=True)
    # Each still receives.
    for name, s, sender, dst in [("r4", r4, a, ("127.0.0.1", p4)), ("r6", r6, c6, ("::1", p6)), ("conn", conn, peer, None)]:
        if dst:
            sender.sendto(b"after", dst)
        else:
            sender.send(b"after")
        s.settimeout(5)
        try:
            data, _ = s.recvfrom(100)
            ok = data == b"after"
        except OSError as e:
            ok, data = False, str(e)
        print(f"{'PASS' if ok else 'FAIL'} new-{name} ({data!r})", flush=True)
        failed += not ok
    print(f"RESULT {6 - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
