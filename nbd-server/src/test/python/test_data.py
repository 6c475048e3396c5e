#!/usr/bin/python3
"""Data integrity, zero/trim, structured-read chunk types and base:allocation block status.

    /usr/bin/python3 test_data.py --uri nbd://127.0.0.1:PORT/disk [--ro-uri nbd://127.0.0.1:PORT/ro] [--peer nbdkit]

Areas of the writable export (sparse, >= 64 MiB) used here, disjoint from the other scripts:
  [8 MiB, 24 MiB)   shadow area: every write/zero/trim is mirrored in a local model and verified
  [24 MiB, 32 MiB)  structured-read chunk types
  [32 MiB, 48 MiB)  block status (trimmed first, so it is fresh even on a re-run)
  [size-2 MiB, size-1 MiB)  never written by any script: must read as a hole
"""

import random
import sys

sys.dont_write_bytecode = True

import nbd  # noqa: E402

import nbdtest  # noqa: E402
from nbdtest import check, skip, info  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
A_BASE, A_LEN = 8 * MiB, 16 * MiB
C_BASE = 24 * MiB
B_BASE = 32 * MiB
HOLE_ZERO = nbd.STATE_HOLE | nbd.STATE_ZERO


class Shadow:
    """The area [A_BASE, A_BASE + A_LEN) on the server and a local copy of what it must contain."""

    def __init__(self, h):
        self.h = h
        self.model = bytearray(nbdtest.pattern(424242, A_LEN))
        for off in range(0, A_LEN, 4 * MiB):
            h.pwrite(bytes(self.model[off:off + 4 * MiB]), A_BASE + off)

    def verify(self, off, length, label):
        """Read [off-1, off+length+1) (clipped to the area) and compare with the model."""
        lo = max(A_BASE, off - 1)
        hi = min(A_BASE + A_LEN, off + length + 1)
        got = bytes(self.h.pread(hi - lo, lo))
        want = bytes(self.model[lo - A_BASE:hi - A_BASE])
        if got == want:
            return check(True, label)
        first = next(i for i in range(len(got)) if got[i] != want[i])
        return check(False, label, "first difference at offset %d (byte %d of the window)" % (lo + first, first))

    def write(self, off, data, flags=0):
        self.h.pwrite(data, off, flags)
        self.model[off - A_BASE:off - A_BASE + len(data)] = data

    def zero(self, off, length, flags=0):
        self.h.zero(length, off, flags)
        self.model[off - A_BASE:off - A_BASE + length] = bytes(length)


def t_patterns(args, h, sh):
    sizes = [1, 2, 3, 511, 512, 513, 4095, 4096, 4097, 65535, 65536, 65537, MiB - 1, MiB, MiB + 1, 4 * MiB]
    # Boundaries (relative to the area start, which is 1 MiB aligned) to straddle.
    boundaries = [4 * KiB, 64 * KiB, MiB]
    seed = 1
    for size in sizes:
        for b in boundaries:
            # Put the write so it crosses A_BASE + k*b for some k, starting at an odd offset.
            centre = A_BASE + 5 * MiB + b * (3 if b < MiB else 2)
            off = centre - max(1, size // 2) - (7 if size > 14 else 0)
            if size == 1:
                off = centre - 1  # the byte just before the boundary
            seed += 1
            flags = nbd.CMD_FLAG_FUA if seed % 5 == 0 else 0
            sh.write(off, nbdtest.pattern(seed, size), flags)
            sh.verify(off, size, "write %d bytes at %d across a %d-byte boundary%s"
                      % (size, off, b, " (FUA)" if flags else ""))
    # Back-to-back writes whose ends touch, then one read across all of them.
    off = A_BASE + 13 * MiB + 4093
    start = off
    for i, size in enumerate([3, 4096, 1, 65536, 513, 7]):
        sh.write(off, nbdtest.pattern(900 + i, size))
        off += size
    sh.verify(start, off - start, "adjacent writes of mixed sizes read back as one range")
    h.flush()
    check(True, "flush after the pattern writes")


def t_random_reads(args, h, sh):
    rng = random.Random(77)
    sizes = [1, 7, 512, 4095, 4096, 4097, 65537, 300000, MiB + 5]
    bad = []
    for i in range(60):
        size = sizes[i % len(sizes)]
        off = A_BASE + rng.randrange(0, A_LEN - size)
        got = bytes(h.pread(size, off))
        if got != bytes(sh.model[off - A_BASE:off - A_BASE + size]):
            bad.append((off, size))
    check(not bad, "60 reads of assorted sizes at random unaligned offsets match", bad[:5])


def t_zero_trim(args, h, sh):
    cases = [
        (A_BASE + 2 * MiB + 4096 - 50, 100, 0, "zero 100 bytes across a 4 KiB boundary"),
        (A_BASE + 2 * MiB + 64 * KiB - 1, 2, nbd.CMD_FLAG_NO_HOLE, "zero 2 bytes across 64 KiB, NO_HOLE"),
        (A_BASE + 3 * MiB - 70000 // 2, 70000, 0, "zero 70000 bytes across 1 MiB"),
        (A_BASE + 4 * MiB - 3, MiB + 6, nbd.CMD_FLAG_NO_HOLE, "zero 1 MiB + 6 across 1 MiB, NO_HOLE"),
        (A_BASE + 6 * MiB, MiB, 0, "zero an aligned 1 MiB"),
        (A_BASE + 7 * MiB, MiB, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA, "zero an aligned 1 MiB, NO_HOLE+FUA"),
        (A_BASE + 8 * MiB + 1, 1, 0, "zero 1 byte"),
    ]
    for off, length, flags, label in cases:
        sh.zero(off, length, flags)
        sh.verify(off, length, label)
    # Writing over a zeroed range works as usual.
    sh.write(A_BASE + 6 * MiB + 4096, nbdtest.pattern(55, 8192))
    sh.verify(A_BASE + 6 * MiB, MiB, "write into a zeroed range")
    # Aligned trims read back as zeroes (nbdtail punches holes; nbdkit's memory plugin frees pages).
    for off, length in [(A_BASE + 9 * MiB, MiB), (A_BASE + 10 * MiB + 64 * KiB, 256 * KiB)]:
        h.trim(length, off)
        sh.model[off - A_BASE:off - A_BASE + length] = bytes(length)
        sh.verify(off, length, "trim %d bytes at %d then read zeroes" % (length, off))
    # An unaligned trim may round inwards: inside it each byte is old or zero, outside nothing changes.
    off, length = A_BASE + 11 * MiB + 1000, 3 * 4096 + 333
    old = bytes(sh.model[off - A_BASE:off - A_BASE + length])
    h.trim(length, off)
    got = bytes(h.pread(length, off))
    check(all(g == 0 or g == o for g, o in zip(got, old)), "unaligned trim: bytes inside read as old data or zero")
    sh.model[off - A_BASE:off - A_BASE + length] = got
    sh.verify(off, length, "unaligned trim leaves bytes outside its range alone")


def t_whole_area(args, h, sh):
    bad = []
    for off in range(0, A_LEN, 4 * MiB):
        if bytes(h.pread(4 * MiB, A_BASE + off)) != bytes(sh.model[off:off + 4 * MiB]):
            bad.append(A_BASE + off)
    check(not bad, "the whole 16 MiB shadow area matches the model", bad)


def structured(h, length, off, flags=0):
    chunks = []

    def cb(sub, coff, status, err):
        chunks.append((coff, len(sub), status, bytes(sub)))
        return 0
    buf = bytes(h.pread_structured(length, off, cb, flags))
    return buf, chunks


def tiles(chunks, off, length):
    """Chunks cover [off, off+length) exactly once."""
    spans = sorted((c[0], c[0] + c[1]) for c in chunks)
    pos = off
    for s, e in spans:
        if s != pos or e <= s:
            return False
        pos = e
    return pos == off + length


def t_chunks(args, h):
    data = nbdtest.pattern(6001, 2 * MiB)
    h.trim(8 * MiB, C_BASE)
    h.pwrite(data, C_BASE)
    hole_off = C_BASE + MiB
    h.trim(MiB, hole_off)
    expect = data[:MiB] + bytes(MiB)

    buf, ch = structured(h, MiB, C_BASE)
    check(buf == data[:MiB], "structured read of written data returns it")
    check(tiles(ch, C_BASE, MiB), "data read: chunks tile the range", [(c[0], c[1], c[2]) for c in ch][:8])
    check(ch and all(c[2] == nbd.READ_DATA for c in ch), "read over written data: only OFFSET_DATA chunks",
          sorted(set(c[2] for c in ch)))

    buf, ch = structured(h, MiB, hole_off)
    check(buf == bytes(MiB), "structured read of a trimmed 1 MiB range returns zeroes")
    check(tiles(ch, hole_off, MiB), "hole read: chunks tile the range")
    kinds = sorted(set(c[2] for c in ch))
    if args.nbdkit:
        # nbdkit never sends NBD_REPLY_TYPE_OFFSET_HOLE: every read is one OFFSET_DATA chunk.
        skip("trimmed range read -> only OFFSET_HOLE chunks (nbdkit sends data chunks): %r" % kinds)
    else:
        check(kinds == [nbd.READ_HOLE], "read over a trimmed 1 MiB range: only OFFSET_HOLE chunks", kinds)

    # Half data, half hole.
    off = C_BASE + MiB // 2
    buf, ch = structured(h, MiB, off)
    check(buf == expect[MiB // 2:MiB // 2 + MiB], "mixed data/hole read returns the right bytes")
    check(tiles(ch, off, MiB), "mixed read: chunks tile the range")
    hole_chunks = [c for c in ch if c[2] == nbd.READ_HOLE]
    check(all(c[0] >= hole_off for c in hole_chunks), "no OFFSET_HOLE chunk over written data")
    if args.nbdkit:
        skip("mixed read: trimmed half covered by OFFSET_HOLE (nbdkit has no hole chunks)")
    else:
        covered = sum(c[1] for c in hole_chunks)
        check(covered == MiB // 2, "mixed read: the trimmed half comes as OFFSET_HOLE (%d bytes)" % covered)

    # Unaligned read inside the hole, and one across the data/hole edge.
    buf, ch = structured(h, 5000, hole_off + 1)
    check(buf == bytes(5000) and tiles(ch, hole_off + 1, 5000), "unaligned read inside a hole")
    if args.nbdkit:
        skip("unaligned read inside a hole: hole chunks (nbdkit sends data chunks)")
    else:
        check([c[2] for c in ch] == [nbd.READ_HOLE] * len(ch), "unaligned read inside a hole: hole chunks")
    buf, ch = structured(h, 8191, hole_off - 4095)
    check(buf == expect[MiB - 4095:MiB + 4096] and tiles(ch, hole_off - 4095, 8191),
          "unaligned read across the data/hole edge")

    # DF: one content chunk for the whole (<= 64 KiB) range, even over data + hole.
    off = hole_off - 32 * KiB
    buf, ch = structured(h, 64 * KiB, off, nbd.CMD_FLAG_DF)
    check(buf == expect[MiB - 32 * KiB:MiB + 32 * KiB], "DF read over data+hole returns the right bytes")
    check(len(ch) == 1 and ch[0][0] == off and ch[0][1] == 64 * KiB and ch[0][2] == nbd.READ_DATA,
          "DF read over data+hole: exactly one OFFSET_DATA chunk", [(c[0], c[1], c[2]) for c in ch])
    buf, ch = structured(h, 64 * KiB, hole_off, nbd.CMD_FLAG_DF)
    check(buf == bytes(64 * KiB) and len(ch) == 1 and tiles(ch, hole_off, 64 * KiB),
          "DF read over a hole: exactly one chunk", [(c[0], c[1], c[2]) for c in ch])

    # Never-written area at the end of the disc.
    size = h.get_size()
    nw = size - 2 * MiB
    buf, ch = structured(h, MiB, nw)
    check(buf == bytes(MiB) and tiles(ch, nw, MiB), "never-written area reads as zeroes")
    if args.nbdkit:
        skip("never-written area -> only OFFSET_HOLE chunks (nbdkit sends data chunks)")
    else:
        check(sorted(set(c[2] for c in ch)) == [nbd.READ_HOLE], "never-written area: only OFFSET_HOLE chunks")


def extents_of(h, length, off, flags=0):
    got = []

    def cb(ctx, eoff, entries, err):
        got.append((ctx, eoff, list(entries)))
        return 0
    h.block_status(length, off, cb, flags)
    return got


def flags_by_block(entries, off, length, block):
    """Map each block (index relative to off) overlapped by the extents to the set of flags seen."""
    res = {}
    pos = off
    for i in range(0, len(entries), 2):
        ln, fl = entries[i], entries[i + 1]
        s, e = pos, min(pos + ln, off + length)
        for b in range((s - off) // block, (e - 1 - off) // block + 1):
            if 0 <= b < length // block:
                res.setdefault(b, set()).add(fl)
        pos += ln
        if pos >= off + length:
            break
    return res, pos - off


def sane(entries, length):
    pairs = [(entries[i], entries[i + 1]) for i in range(0, len(entries), 2)]
    if not pairs or any(ln == 0 for ln, _ in pairs):
        return False
    if sum(ln for ln, _ in pairs[:-1]) >= length:
        return False
    return all(fl & ~HOLE_ZERO == 0 for _, fl in pairs)


def t_block_status(args, h):
    blk = 64 * KiB
    nblk = 16
    h.trim(16 * MiB, B_BASE)
    written = {0, 3, 4, 5, 9, 15}
    for b in sorted(written):
        h.pwrite(nbdtest.pattern(7000 + b, blk), B_BASE + b * blk)
    expected = {b: (0 if b in written else HOLE_ZERO) for b in range(nblk)}

    def run_len(b):
        """Bytes from block b to the end of its run of equal expectation (within the window)."""
        e = b
        while e < nblk and expected[e] == expected[b]:
            e += 1
        return (e - b) * blk

    got = extents_of(h, nblk * blk, B_BASE)
    check(len(got) == 1 and got[0][0] == "base:allocation", "one block status reply for base:allocation",
          [g[0] for g in got])
    ent = got[0][2]
    info("extents: %r" % ent[:40])
    check(sane(ent, nblk * blk), "extents are non-empty, only HOLE/ZERO bits, first N-1 shorter than the request")
    fb, covered = flags_by_block(ent, B_BASE, nblk * blk, blk)
    check(covered >= nblk * blk, "extents cover the whole 1 MiB request (%d bytes)" % covered)
    wrong = {b: sorted(fb.get(b, ())) for b in range(nblk) if fb.get(b) != {expected[b]}}
    check(not wrong, "written 64 KiB blocks are 0, untouched ones HOLE|ZERO (3)", wrong)

    # REQ_ONE: exactly one extent, not longer than the request nor than the run it starts in.
    for b, length in [(0, nblk * blk), (1, nblk * blk - blk), (3, 13 * blk), (6, 10 * blk), (9, 7 * blk),
                      (10, 6 * blk), (15, blk), (6, 4096), (3, 100)]:
        got = extents_of(h, length, B_BASE + b * blk, nbd.CMD_FLAG_REQ_ONE)
        ent = got[0][2] if len(got) == 1 else []
        ok = len(ent) == 2 and 0 < ent[0] <= min(length, run_len(b)) and ent[1] == expected[b]
        check(ok, "REQ_ONE at block %d, length %d: one extent of flags %d, <= request and run"
              % (b, length, expected[b]), ent)

    # Unaligned query starting inside a written block.
    got = extents_of(h, 5000, B_BASE + 100)
    ent = got[0][2] if got else []
    check(len(ent) >= 2 and ent[1] == 0 and 0 < ent[0] <= blk - 100 and sane(ent, 5000),
          "unaligned query inside a written block starts with a data extent <= the rest of the block", ent[:6])

    # Trim some written blocks, write one hole: the map follows.
    h.trim(3 * blk, B_BASE + 3 * blk)
    h.pwrite(nbdtest.pattern(7100, blk), B_BASE + 7 * blk)
    for b in (3, 4, 5):
        expected[b] = HOLE_ZERO
    expected[7] = 0
    got = extents_of(h, nblk * blk, B_BASE)
    ent = got[0][2] if got else []
    fb, covered = flags_by_block(ent, B_BASE, nblk * blk, blk)
    wrong = {b: sorted(fb.get(b, ())) for b in range(nblk) if fb.get(b) != {expected[b]}}
    check(covered >= nblk * blk and not wrong, "after trim + write the map follows (trimmed = 3, written = 0)",
          wrong)
    got = extents_of(h, 13 * blk, B_BASE + 3 * blk, nbd.CMD_FLAG_REQ_ONE)
    ent = got[0][2] if got else []
    check(len(ent) == 2 and ent[1] == HOLE_ZERO and 0 < ent[0] <= run_len(3),
          "REQ_ONE over the trimmed blocks: one HOLE|ZERO extent <= 4 blocks", ent)

    # Never-written area.
    size = h.get_size()
    nw = size - 2 * MiB
    got = extents_of(h, MiB, nw)
    ent = got[0][2] if got else []
    fb, covered = flags_by_block(ent, nw, MiB, blk)
    check(sane(ent, MiB) and covered >= MiB and all(v == {HOLE_ZERO} for v in fb.values()),
          "never-written 1 MiB is HOLE|ZERO throughout", ent[:8])
    got = extents_of(h, MiB, nw, nbd.CMD_FLAG_REQ_ONE)
    ent = got[0][2] if got else []
    check(len(ent) == 2 and ent[1] == HOLE_ZERO and 0 < ent[0] <= MiB,
          "never-written, REQ_ONE: one HOLE|ZERO extent <= 1 MiB", ent)

    # The whole export in one query: sane, and the written blocks show up as data.
    whole = min(size, 1 << 31)  # compact requests carry a 32-bit length
    got = extents_of(h, whole, 0)
    ent = got[0][2] if got else []
    check(sane(ent, whole), "block status over the whole export is sane (%d extents)" % (len(ent) // 2))
    fb, covered = flags_by_block(ent, 0, whole, blk)
    if covered >= B_BASE + nblk * blk:
        check(all(fb.get((B_BASE // blk) + b) == {expected[b]} for b in range(nblk)),
              "whole-export query agrees on the 16 test blocks")
    else:
        # A server may answer a large query with less than the whole range; REQ_ONE-free clients loop.
        check(covered > 0, "whole-export query covers a prefix (%d bytes)" % covered)


def t_read_only(args):
    if args.ro_uri is None:
        skip("read-only export reads (no --ro-uri)")
        return
    r = nbdtest.connect(args.ro_uri)
    size = r.get_size()
    for length, off in [(1, 0), (4097, 4095), (65537, 65535), (MiB + 1, MiB - 1), (4096, size - 4096)]:
        a = bytes(r.pread(length, off))
        b = bytes(r.pread(length, off))
        check(len(a) == length and a == b, "read-only export: %d bytes at %d read twice identically" % (length, off))
    r.shutdown()


def main():
    args = nbdtest.parse_args(__doc__)
    h = nbdtest.connect(args.uri, strict=True)
    size = h.get_size()
    if not check(size >= 64 * MiB, "export is at least 64 MiB (%d)" % size):
        nbdtest.finish()
    check(h.can_meta_context("base:allocation"), "base:allocation negotiated")
    sh = nbdtest.run("shadow area setup", Shadow, h)
    if sh is not None:
        nbdtest.run("pattern writes", t_patterns, args, h, sh)
        nbdtest.run("random reads", t_random_reads, args, h, sh)
        nbdtest.run("zero and trim", t_zero_trim, args, h, sh)
        nbdtest.run("whole area", t_whole_area, args, h, sh)
    nbdtest.run("structured read chunks", t_chunks, args, h)
    nbdtest.run("block status", t_block_status, args, h)
    nbdtest.run("read-only export", t_read_only, args)
    h.shutdown()
    nbdtest.finish()


if __name__ == "__main__":
    nbdtest.guard(main)
