#!/usr/bin/env python3
"""The demo's TCP server: on 127.0.0.1:PORT, it answers each line a client
sends with the number of requests it has answered so far, kept in memory."""
import socket
import sys

port = int(sys.argv[1])
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(1)
print("listening", flush=True)
conn, _ = ls.accept()
answered = 0
f = conn.makefile("rwb", buffering=0)
for line in f:
    answered += 1
    f.write(b"answer %d to %s\n" % (answered, line.strip()))
