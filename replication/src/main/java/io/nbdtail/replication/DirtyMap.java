package io.nbdtail.replication;

import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * Which chunks of a volume differ from the mirror's copy: one bit per chunk, set by guest writes and by failed
 * mirror writes, cleared by the mirror just before it reads a chunk to send it (so a write that lands after
 * the read sets the bit again and is sent in a later pass). Lock-free; marking is cheap enough for the write
 * path (one atomic OR per 64 chunks touched).
 */
public final class DirtyMap {
    private final long size;
    private final int chunkShift;
    private final long chunks;
    private final AtomicLongArray bits;
    private final AtomicLong dirtyChunks = new AtomicLong();

    /**
     * @param size      the volume's size in bytes.
     * @param chunkSize a power of two.
     */
    public DirtyMap(final long size, final int chunkSize) {
        if (Integer.bitCount(chunkSize) != 1) {
            throw new IllegalArgumentException("chunk size " + chunkSize + " is not a power of two");
        }
        this.size = size;
        this.chunkShift = Integer.numberOfTrailingZeros(chunkSize);
        this.chunks = (size + chunkSize - 1) >>> chunkShift;
        this.bits = new AtomicLongArray((int) ((chunks + 63) >>> 6));
    }

    public int chunkSize() {
        return 1 << chunkShift;
    }

    public long chunks() {
        return chunks;
    }

    /** Marks every chunk touching {@code [offset, offset + length)}. */
    public void mark(final long offset, final long length) {
        if (length <= 0 || offset >= size) {
            return;
        }
        final long first = offset >>> chunkShift;
        final long last = (Math.min(size, offset + length) - 1) >>> chunkShift;
        for (long c = first; c <= last; ) {
            final int word = (int) (c >>> 6);
            final long wordEnd = Math.min(last, ((long) word << 6) + 63);
            final long mask = mask(c & 63, wordEnd & 63);
            final long before = bits.getAndUpdate(word, w -> w | mask);
            dirtyChunks.addAndGet(Long.bitCount(mask & ~before));
            c = wordEnd + 1;
        }
    }

    public void markAll() {
        mark(0, size);
    }

    /** Adds every chunk marked in {@code other} (same geometry). */
    public void addAll(final DirtyMap other) {
        for (int i = 0; i < bits.length(); i++) {
            final long add = other.bits.get(i);
            if (add != 0) {
                final long before = bits.getAndUpdate(i, w -> w | add);
                dirtyChunks.addAndGet(Long.bitCount(add & ~before));
            }
        }
    }

    public void clear() {
        for (int i = 0; i < bits.length(); i++) {
            final long before = bits.getAndSet(i, 0);
            dirtyChunks.addAndGet(-Long.bitCount(before));
        }
    }

    private static long mask(final long fromBit, final long toBit) {
        final long upTo = toBit == 63 ? -1L : (1L << (toBit + 1)) - 1;
        return upTo & (-1L << fromBit);
    }

    public long dirtyChunks() {
        return dirtyChunks.get();
    }

    /** Bytes in dirty chunks (the last chunk counted whole; close enough for estimates). */
    public long dirtyBytes() {
        return Math.min(size, dirtyChunks.get() << chunkShift);
    }

    public boolean isClean() {
        return dirtyChunks.get() == 0;
    }

    /**
     * Takes the first run of dirty chunks at or after {@code fromChunk}, at most {@code maxChunks} long, clearing
     * their bits; the caller now owns sending them (or marking them again on failure).
     *
     * @return the run as {@code [offset, length]} in bytes, or {@code null} if nothing is dirty from there on.
     */
    public long[] claimRun(final long fromChunk, final long maxChunks) {
        long c = nextDirty(fromChunk);
        if (c < 0) {
            return null;
        }
        final long start = c;
        while (c < chunks && c - start < maxChunks && claim(c)) {
            c++;
        }
        if (c == start) {
            // Someone else cleared it between the scan and the claim; look again.
            return claimRun(start + 1, maxChunks);
        }
        final long offset = start << chunkShift;
        return new long[] {offset, Math.min(size, c << chunkShift) - offset};
    }

    private boolean claim(final long chunk) {
        final int word = (int) (chunk >>> 6);
        final long bit = 1L << (chunk & 63);
        final long before = bits.getAndUpdate(word, w -> w & ~bit);
        if ((before & bit) != 0) {
            dirtyChunks.decrementAndGet();
            return true;
        }
        return false;
    }

    private long nextDirty(final long fromChunk) {
        if (fromChunk >= chunks) {
            return -1;
        }
        int word = (int) (fromChunk >>> 6);
        long w = bits.get(word) & (-1L << (fromChunk & 63));
        while (true) {
            if (w != 0) {
                final long c = ((long) word << 6) + Long.numberOfTrailingZeros(w);
                return c < chunks ? c : -1;
            }
            if (++word >= bits.length()) {
                return -1;
            }
            w = bits.get(word);
        }
    }

    /** The chunk holding byte {@code offset}. */
    public long chunkOf(final long offset) {
        return offset >>> chunkShift;
    }
}
