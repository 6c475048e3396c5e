#!/usr/bin/python3
"""One round of the crash test (reliability.md C1, C2, C6, C7): verify what survived the last crash, then run a
random workload until the server dies (killed by the test, or halted at a fault point) or time runs out.

  crash_round.py STATE URI_BASE VOLUME API_BASE TOKEN_FILE SEED SECONDS

STATE is a JSON file carrying the model between rounds: for every 4 KiB block the last durable value (covered by
a FLUSH or a snapshot) and the values written since, which a crash may or may not have kept; and for every
snapshot its exact contents. Values are 64-bit tokens: a block holds its token repeated (0 = zeros).
Exit 0: verified and ran; 1: a block or snapshot read something the model does not allow.
"""
import json
import os
import random
import struct
import sys
import time
import urllib.error
import urllib.request

import nbd

BLOCK = 4096
UNKNOWN = -1  # trimmed: anything may be read until the block is written again


def api(base, token, method, path, body=None):
    request = urllib.request.Request(base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Bearer " + token,
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def decode(data):
    token = struct.unpack_from("<q", data)[0]
    if data == struct.pack("<q", token) * (BLOCK // 8):
        return token
    return None  # garbage: never allowed


def main():
    state_path, uri_base, volume, api_base, token_file, seed, seconds = sys.argv[1:8]
    token = open(token_file).read().strip()
    rng = random.Random(int(seed))
    state = json.load(open(state_path)) if os.path.exists(state_path) else None
    try:
        h, blocks, state, verified = verify(state, uri_base, volume, api_base, token)
    except (nbd.Error, urllib.error.URLError, ConnectionError, OSError) as e:
        # The server went away while we verified (a fault point hit by the verification's own FLUSH): nothing
        # was written, so the model stands; the next round verifies again.
        print("server went away during verification: %s" % str(e)[:120])
        sys.exit(3)
    open(state_path + ".verified", "w").close()
    workload(state_path, state, h, blocks, verified, rng, api_base, token, volume, float(seconds))


def verify(state, uri_base, volume, api_base, token):
    """Checks every block and snapshot against the model, then flushes: what is there now is the new baseline."""
    h = nbd.NBD()
    h.connect_uri(uri_base + volume)
    blocks = h.get_size() // BLOCK
    if state is None:
        state = {"durable": [0] * blocks, "pending": [[] for _ in range(blocks)], "snapshots": {},
                 "maybe_snapshots": {}, "next": 1}
    errors = []
    current = []
    for b in range(blocks):
        got = decode(h.pread(BLOCK, b * BLOCK))
        allowed = {state["durable"][b]} | set(state["pending"][b])
        if UNKNOWN not in allowed and got not in allowed:
            errors.append("live block %d reads %s; allowed %s" % (b, got, sorted(allowed)))
        current.append(UNKNOWN if got is None else got)
    listed = {s["name"] for s in api(api_base, token, "GET", "/v1/volumes/%s/snapshots" % volume)}
    for name, contents in list(state["snapshots"].items()) + list(state["maybe_snapshots"].items()):
        required = name in state["snapshots"]
        if name not in listed:
            if required:
                errors.append("snapshot %s was acknowledged but is gone" % name)
            state["snapshots"].pop(name, None)
            continue
        s = nbd.NBD()
        s.connect_uri(uri_base + volume + "@" + name)
        for b in range(blocks):
            got = decode(s.pread(BLOCK, b * BLOCK))
            if contents[b] != UNKNOWN and got != contents[b]:
                errors.append("snapshot %s block %d reads %s; it was taken holding %s" % (name, b, got, contents[b]))
        s.shutdown()
        state["snapshots"][name] = contents
    state["maybe_snapshots"] = {}
    for name in listed - set(state["snapshots"]):
        state["snapshots"][name] = None  # taken by a call the crash cut off: contents unknown, only deletable
    if errors:
        print("\n".join(errors[:30]))
        sys.exit(1)
    # What is there now becomes durable once flushed.
    h.flush()
    state["durable"] = current
    state["pending"] = [[] for _ in range(blocks)]
    return h, blocks, state, {"blocks": blocks, "snapshots": len(state["snapshots"])}


def workload(state_path, state, h, blocks, verified, rng, api_base, token, volume, seconds):
    """Random requests, one at a time, until the server dies or time runs out; then saves the model."""
    deadline = time.monotonic() + seconds
    ops = 0
    try:
        while time.monotonic() < deadline:
            op = rng.randrange(100)
            b = rng.randrange(blocks)
            n = min(blocks - b, 1 + rng.randrange(40))
            if op < 55:
                tokens = []
                payload = bytearray()
                for i in range(n):
                    t = state["next"]
                    state["next"] += 1
                    tokens.append(t)
                    payload += struct.pack("<q", t) * (BLOCK // 8)
                for i, t in enumerate(tokens):
                    state["pending"][b + i].append(t)
                fua = rng.randrange(8) == 0
                h.pwrite(payload, b * BLOCK, nbd.CMD_FLAG_FUA if fua else 0)
                if fua:  # C4: a FUA write is durable once acknowledged
                    for i, t in enumerate(tokens):
                        state["durable"][b + i] = t
                        state["pending"][b + i] = []
            elif op < 65:
                for i in range(n):
                    state["pending"][b + i].append(0)
                h.zero(n * BLOCK, b * BLOCK)
            elif op < 72:
                for i in range(n):
                    state["pending"][b + i].append(UNKNOWN)
                h.trim(n * BLOCK, b * BLOCK)
            elif op < 88:
                h.flush()
                settle(state, blocks)
            elif op < 95 and len(state["snapshots"]) < 8:
                name = "c%d" % state["next"]
                state["next"] += 1
                contents = exact(state, blocks)
                state["maybe_snapshots"][name] = contents
                api(api_base, token, "POST", "/v1/volumes/%s/snapshots" % volume, {"name": name})
                del state["maybe_snapshots"][name]
                state["snapshots"][name] = contents
                settle(state, blocks)  # a snapshot syncs everything written before it
            elif state["snapshots"]:
                name = rng.choice(sorted(state["snapshots"]))
                state["maybe_snapshots"][name] = state["snapshots"].pop(name)
                op_ = api(api_base, token, "DELETE", "/v1/volumes/%s/snapshots/%s" % (volume, name))
                while op_["state"] in ("queued", "running"):
                    time.sleep(0.05)
                    op_ = api(api_base, token, "GET", "/v1/operations/%s" % op_["id"])
                if op_["state"] != "succeeded":
                    raise RuntimeError("delete of %s: %s" % (name, op_))
                del state["maybe_snapshots"][name]
            ops += 1
    except (nbd.Error, urllib.error.URLError, ConnectionError, OSError) as e:
        verified["stopped"] = str(e)[:80]
    # Snapshots whose contents a cut-off call left unknown are kept as maybe with unknown contents.
    for name, contents in list(state["snapshots"].items()):
        if contents is None:
            state["snapshots"][name] = [UNKNOWN] * blocks
    json.dump(state, open(state_path + ".tmp", "w"))
    os.replace(state_path + ".tmp", state_path)
    verified["ops"] = ops
    print("ok " + json.dumps(verified))


def exact(state, blocks):
    """The contents right now: with one request at a time, the last value written (or durable)."""
    return [state["pending"][b][-1] if state["pending"][b] else state["durable"][b] for b in range(blocks)]


def settle(state, blocks):
    """A FLUSH (or a snapshot) made every completed write durable."""
    state["durable"] = exact(state, blocks)
    state["pending"] = [[] for _ in range(blocks)]


if __name__ == "__main__":
    main()
