#!/usr/bin/python3
"""Opens COUNT TCP connections to HOST:PORT from the local address SOURCE and never sends a byte: the "idle
connections that never finish the handshake" abuse (reliability.md R1). Used by NbdAbuseIT.

Prints "connected N" once every connect() has been issued, then reads (the server's greeting) until the server
has closed every connection or --wait seconds have passed, and prints "greeted G" and "closed C". Raises its own
soft file-descriptor limit to what COUNT needs (up to the hard limit)."""
import argparse
import errno
import resource
import selectors
import socket
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--host", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--source", default="127.0.0.2")
ap.add_argument("--count", type=int, required=True)
ap.add_argument("--wait", type=float, required=True)
args = ap.parse_args()

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
need = args.count + 64
if soft < need:
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"need {need} file descriptors but the hard limit is {hard}; raise it (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

sel = selectors.DefaultSelector()
socks = []
# In batches smaller than the server's accept backlog, each one established before the next: a SYN dropped
# for a full backlog would be retried only after seconds (1, 3, 7, ...), which would make the test slow.
BATCH = 500
while len(socks) < args.count:
    pending = selectors.DefaultSelector()
    for _ in range(min(BATCH, args.count - len(socks))):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((args.source, 0))
        s.setblocking(False)
        rc = s.connect_ex((args.host, args.port))
        if rc not in (0, errno.EINPROGRESS):
            sys.exit(f"connect failed: {errno.errorcode.get(rc, rc)}")
        pending.register(s, selectors.EVENT_WRITE)
        socks.append(s)
    waiting = len(pending.get_map())
    deadline = time.time() + 30
    while waiting and time.time() < deadline:
        for key, _ in pending.select(timeout=0.5):
            pending.unregister(key.fileobj)
            waiting -= 1
    pending.close()
for s in socks:
    sel.register(s, selectors.EVENT_READ)
print(f"connected {len(socks)}", flush=True)

greeted = set()
closed = 0
deadline = time.time() + args.wait
remaining = len(socks)
while remaining and time.time() < deadline:
    for key, _ in sel.select(timeout=0.5):
        s = key.fileobj
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if data:
            greeted.add(s.fileno())
        else:
            sel.unregister(s)
            closed += 1
            remaining -= 1
print(f"greeted {len(greeted)}", flush=True)
print(f"closed {closed}", flush=True)
for s in socks:
    s.close()
