#!/usr/bin/python3
"""A snapshot is a point in time: every write acknowledged before the snapshot call started is in it, and no
write issued after the call returned is.

Keeps up to 32 writes in flight on one connection (libnbd aio), each writing a unique 4 KiB block, while a second
thread takes snapshots through the control API. Afterwards reads every snapshot through its own export
(VOLUME@SNAPSHOT) and checks each block against the log of writes.

  point_in_time.py NBD_URI_BASE VOLUME API_BASE TOKEN_FILE
Exits 0 and prints a summary when every check passed; 1 with the first violations otherwise.
"""
import json
import os
import random
import struct
import sys
import threading
import time
import urllib.request

import nbd

BLOCK = 4096


def api(base, token, method, path, body=None):
    request = urllib.request.Request(base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Bearer " + token,
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def main():
    uri_base, volume, api_base, token_file = sys.argv[1:5]
    token = open(token_file).read().strip()
    h = nbd.NBD()
    h.connect_uri(uri_base + volume)
    blocks = h.get_size() // BLOCK
    rng = random.Random(7)
    run = random.SystemRandom().getrandbits(63) | 1  # tells this run's blocks from any earlier contents
    clock = time.monotonic
    # per write: (block, sequence, issued_at, done_at)
    log = []
    snapshots = []  # (name, started_at, returned_at)
    stop = threading.Event()

    failure = []

    def snapshotter():
        try:
            for i in range(4):
                time.sleep(0.15)
                name = "pit%d-%d" % (i, os.getpid())
                started = clock()
                api(api_base, token, "POST", "/v1/volumes/%s/snapshots" % volume, {"name": name})
                snapshots.append((name, started, clock()))
        except Exception as e:  # report it, and let the writer loop end
            failure.append(repr(e))
        finally:
            stop.set()

    thread = threading.Thread(target=snapshotter)
    thread.start()
    sequence = 0
    in_flight = {}

    def completed(entry, error):
        # Returning 1 retires the command at once; a failed write is a failed test.
        if error.value != 0:
            failure.append("write of block %d failed with errno %d" % (entry[0], error.value))
        entry[3] = clock()
        del in_flight[entry[1]]
        return 1

    while not stop.is_set() or in_flight:
        while not stop.is_set() and len(in_flight) < 32:
            sequence += 1
            block = rng.randrange(blocks)
            data = struct.pack("<QQQQ", block, sequence, run, 0) * (BLOCK // 32)
            entry = [block, sequence, clock(), None]
            in_flight[sequence] = entry
            h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), block * BLOCK,
                         completion=lambda err, e=entry: completed(e, err))
            log.append(entry)
        h.poll(-1)
    thread.join()
    h.shutdown()
    if failure:
        print("taking a snapshot failed: " + failure[0])
        sys.exit(1)

    violations = []
    for name, started, returned in snapshots:
        s = nbd.NBD()
        s.connect_uri(uri_base + volume + "@" + name)
        # For each block: the newest write completed before the snapshot started must be visible, or a later
        # one that was still in flight (or issued) before the snapshot returned. Never one issued after it.
        by_block = {}
        for block, seq, issued, done in log:
            by_block.setdefault(block, []).append((seq, issued, done))
        for block, writes in by_block.items():
            data = s.pread(BLOCK, block * BLOCK)
            got_block, got_seq, got_run, _ = struct.unpack_from("<QQQQ", data)
            # Writes to one block that overlap in flight may land in either order (NBD leaves it undefined),
            # so any write completed before the snapshot started is possible unless a later write to the block
            # was issued after it had completed and itself completed before the snapshot started.
            done_before = [(seq, issued, done) for seq, issued, done in writes if done < started]
            allowed = {seq for seq, issued, done in done_before
                       if not any(i2 > done for s2, i2, d2 in done_before)}
            allowed |= {seq for seq, issued, done in writes if done >= started and issued <= returned}
            if not done_before:
                allowed.add(0)
            # Data of an earlier run (another nonce) counts as the initial contents, like zeros.
            if got_run != run:
                got = 0
            elif got_block == block and data == struct.pack("<QQQQ", block, got_seq, run, 0) * (BLOCK // 32):
                got = got_seq
            else:
                got = -1  # torn or foreign bytes: never allowed
            if got not in allowed:
                violations.append("snapshot %s block %d holds write %d; allowed %s" % (name, block, got,
                                                                                        sorted(allowed)[:5]))
        s.shutdown()
    if violations:
        print("\n".join(violations[:20]))
        sys.exit(1)
    print("ok: %d writes, %d snapshots, every block of every snapshot is a point in time" % (len(log),
                                                                                              len(snapshots)))


if __name__ == "__main__":
    main()
