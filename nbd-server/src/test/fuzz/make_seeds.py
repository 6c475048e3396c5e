#!/usr/bin/python3
"""Writes the seed corpus of NbdFuzzTest: valid client byte streams (a control byte, then what the client
sends after the greeting), one file per seed. Rerun after changing it; the files are committed so that the
regression run needs no Python. Usage: make_seeds.py [RESOURCES_DIR]"""
import os
import struct
import sys

base = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "resources", "io", "nbdtail", "nbd", "engine", "NbdFuzzTestInputs")

IHAVEOPT = 0x49484156454F5054
FLAGS = 1 | 2  # fixed newstyle, no zeroes
REQUEST = 0x25609513
READ, WRITE, DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS = 0, 1, 2, 3, 4, 5, 6, 7
FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO = 1, 2, 4, 8, 16


def opt(option, data=b""):
    return struct.pack(">QII", IHAVEOPT, option, len(data)) + data


def info(name, *infos):
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos)


def meta(name, *queries):
    n = name.encode()
    out = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
    for q in queries:
        out += struct.pack(">I", len(q)) + q.encode()
    return out


def req(type_, cookie, offset, length, flags=0, payload=b""):
    return struct.pack(">IHHQQI", REQUEST, flags, type_, cookie, offset, length) + payload


flags = struct.pack(">I", FLAGS)
transmission = (req(WRITE, 1, 0, 512, FUA, bytes(range(256)) * 2) + req(READ, 2, 0, 4096)
                + req(READ, 3, 4096, 512, DF) + req(TRIM, 4, 8192, 4096) + req(WRITE_ZEROES, 5, 0, 65536, NO_HOLE)
                + req(WRITE_ZEROES, 6, 0, 4096, FAST_ZERO) + req(CACHE, 7, 0, 4096) + req(BLOCK_STATUS, 8, 0, 1 << 20)
                + req(BLOCK_STATUS, 9, 0, 1 << 20, REQ_ONE) + req(FLUSH, 10, 0, 0) + req(DISC, 11, 0, 0))
seeds = {
    "handshake": {
        "go-structured-meta": flags + opt(8) + opt(10, meta("disk", "base:allocation")) + opt(7, info("disk", 3))
        + transmission,
        "list-info-export-name": flags + opt(3) + opt(6, info("disk", 1, 2, 3)) + opt(1, b"disk")
        + req(WRITE, 1, 512, 4, 0, b"abcd") + req(FLUSH, 2, 0, 0) + req(DISC, 3, 0, 0),
        "list-meta-abort": flags + opt(9, meta("disk", "base:")) + opt(9, meta("disk")) + opt(2),
        "starttls-unknown-default": flags + opt(5) + opt(99, b"x") + opt(8) + opt(8) + opt(7, info("")),
        "errors": flags + opt(6, info("nope")) + opt(10, meta("disk", "base:allocation")) + opt(7, b"\0\0\0\x09ab")
        + opt(3, b"junk") + opt(2),
    },
    "transmission": {
        "plain": transmission,
        "structured-contexts": transmission,
        "bad": req(READ, 1, 1 << 63, 4096) + req(WRITE, 2, 0, 1 << 26) + req(99, 3, 0, 0) + req(READ, 4, 0, 0, FUA)
        + req(FLUSH, 5, 4096, 1) + req(READ, 6, (1 << 64) - 512, 1024) + req(DISC, 7, 0, 0),
    },
}
# The control byte: chunking in bits 0-1; for transmission also structured replies (0x40), base:allocation (0x80).
control = {"plain": 0x03, "structured-contexts": 0xc1, "bad": 0x42}
for method, group in seeds.items():
    d = os.path.join(base, method)
    os.makedirs(d, exist_ok=True)
    for i, (name, stream) in enumerate(sorted(group.items())):
        c = control.get(name, i % 4)
        with open(os.path.join(d, "seed-" + name), "wb") as f:
            f.write(bytes([c]) + stream)
print("wrote seeds under", os.path.normpath(base))
