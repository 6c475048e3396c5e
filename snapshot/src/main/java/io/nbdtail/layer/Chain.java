package io.nbdtail.layer;

import io.nbdtail.storage.ExtentSink;
import io.nbdtail.storage.StorageException;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;

/**
 * The layers one view reads through, bottom first, and its <em>owner map</em>: one byte per cluster naming the
 * topmost layer that holds the cluster, so that a read costs one lookup and one {@code pread} whatever the
 * depth. A plain volume (one base layer) has no owner map.
 *
 * <p>Owner byte: the layer's index in the chain, with {@link #ZERO_FLAG} when that layer marks the cluster as
 * zeros; {@link #NOBODY} when no layer holds it (it reads as zeros).
 */
final class Chain {
    static final byte NOBODY = (byte) 0xFF;
    static final int ZERO_FLAG = 0x40;
    static final int INDEX_MASK = 0x3F;

    final Layer[] layers;
    final byte[] owner;
    final int top;
    final int shift;
    final int clusterSize;
    final long size;

    Chain(final Layer[] layers, final byte[] owner, final long size, final int clusterSize) {
        this.layers = layers;
        this.owner = owner;
        this.top = layers.length - 1;
        this.size = size;
        this.clusterSize = clusterSize;
        this.shift = Integer.numberOfTrailingZeros(clusterSize);
    }

    boolean plain() {
        return owner == null;
    }

    long clusters() {
        return (size + clusterSize - 1) >>> shift;
    }

    /** Builds the owner map of {@code layers} from their cluster maps: O(clusters in use), not O(size). */
    static byte[] owners(final Layer[] layers, final long size, final int clusterSize) {
        final long clusters = (size + clusterSize - 1) / clusterSize;
        final byte[] owner = new byte[Math.toIntExact(clusters)];
        final int first = layers[0].isBase() ? 1 : 0;
        Arrays.fill(owner, first == 1 ? 0 : NOBODY);
        for (int i = first; i < layers.length; i++) {
            final ClusterMap map = layers[i].map();
            for (long c = map.nextUsed(0, clusters); c < clusters; c = map.nextUsed(c + 1, clusters)) {
                owner[(int) c] = (byte) (map.state(c) == ClusterMap.ZERO ? i | ZERO_FLAG : i);
            }
        }
        return owner;
    }

    /** The end of the run of clusters starting at {@code pos} with the same owner, capped at {@code end}. */
    long runEnd(final long pos, final long end) {
        final byte o = owner[(int) (pos >>> shift)];
        long next = ((pos >>> shift) + 1) << shift;
        while (next < end && owner[(int) (next >>> shift)] == o) {
            next += clusterSize;
        }
        return Math.min(next, end);
    }

    void read(final long address, final int length, final long offset) throws StorageException {
        if (owner == null) {
            layers[0].data().read(address, length, offset);
            return;
        }
        final long end = offset + length;
        long pos = offset;
        while (pos < end) {
            final byte o = owner[(int) (pos >>> shift)];
            final long runEnd = runEnd(pos, end);
            final int n = (int) (runEnd - pos);
            if (o == NOBODY || (o & ZERO_FLAG) != 0) {
                MemorySegment.ofAddress(address + (pos - offset)).reinterpret(n).fill((byte) 0);
            } else {
                layers[o].data().read(address + (pos - offset), n, pos);
            }
            pos = runEnd;
        }
    }

    /** Which state {@code base:allocation} reports; see {@link ExtentSink}. */
    long allocation(final long offset, final long length, final ExtentSink sink, final int maxExtents)
        throws StorageException {
        if (owner == null) {
            return layers[0].data().allocation(offset, length, sink, maxExtents);
        }
        final Coalescer out = new Coalescer(sink, maxExtents);
        final long end = offset + length;
        long pos = offset;
        while (pos < end && !out.stopped()) {
            final byte o = owner[(int) (pos >>> shift)];
            final long runEnd = runEnd(pos, end);
            if (o == NOBODY) {
                out.extent(runEnd - pos, ExtentSink.HOLE | ExtentSink.ZERO);
            } else if ((o & ZERO_FLAG) != 0) {
                out.extent(runEnd - pos, ExtentSink.ZERO);
            } else if (layers[o].isBase()) {
                baseExtents(pos, runEnd, out, -1);
            } else {
                out.extent(runEnd - pos, 0);
            }
            pos = runEnd;
        }
        return out.finish();
    }

    /**
     * {@code qemu:allocation-depth}: 0 where no layer holds the range, 1 where the top layer does, 2 for the one
     * below, and so on. A base layer holds only what its file has allocated.
     */
    long depth(final long offset, final long length, final ExtentSink sink, final int maxExtents)
        throws StorageException {
        final Coalescer out = new Coalescer(sink, maxExtents);
        final long end = offset + length;
        long pos = offset;
        while (pos < end && !out.stopped()) {
            final byte o = owner == null ? 0 : owner[(int) (pos >>> shift)];
            final long runEnd = owner == null ? end : runEnd(pos, end);
            if (o == NOBODY) {
                out.extent(runEnd - pos, 0);
            } else if (layers[o & INDEX_MASK].isBase()) {
                baseExtents(pos, runEnd, out, top + 1);
            } else {
                out.extent(runEnd - pos, top - (o & INDEX_MASK) + 1);
            }
            pos = runEnd;
        }
        return out.finish();
    }

    /**
     * {@code qemu:dirty-bitmap:S}: 1 for the clusters some layer above chain index {@code since} holds (written,
     * zeroed or trimmed after snapshot {@code since} was taken), 0 for the rest.
     */
    long dirty(final int since, final long offset, final long length, final ExtentSink sink, final int maxExtents) {
        final Coalescer out = new Coalescer(sink, maxExtents);
        final long end = offset + length;
        long pos = offset;
        while (pos < end && !out.stopped()) {
            final byte o = owner == null ? 0 : owner[(int) (pos >>> shift)];
            final long runEnd = owner == null ? end : runEnd(pos, end);
            out.extent(runEnd - pos, o != NOBODY && (o & INDEX_MASK) > since ? 1 : 0);
            pos = runEnd;
        }
        return out.finish();
    }

    /**
     * The base layer's extents in {@code [from, to)}: data is data, a hole is unallocated. With {@code depth >= 0},
     * flags become depths: {@code depth} for data, 0 for holes.
     */
    private void baseExtents(final long from, final long to, final Coalescer out, final int depth)
        throws StorageException {
        long pos = from;
        while (pos < to && !out.stopped()) {
            final long start = pos;
            final long[] described = {0};
            layers[0].data().allocation(pos, to - pos, (length, flags) -> {
                described[0] += length;
                final boolean hole = (flags & ExtentSink.HOLE) != 0;
                out.extent(length, depth < 0 ? (hole ? ExtentSink.HOLE | ExtentSink.ZERO : flags) : (hole ? 0 : depth));
            }, 64);
            pos = start + Math.max(described[0], 1);
        }
    }

    /**
     * Merges neighbouring extents with equal flags and stops after {@code max} extents, as BLOCK_STATUS wants.
     */
    static final class Coalescer implements ExtentSink {
        private final ExtentSink out;
        private final int max;
        private int emitted;
        private long described;
        private long pendingLength;
        private int pendingFlags = -1;
        private boolean stopped;

        Coalescer(final ExtentSink out, final int max) {
            this.out = out;
            this.max = Math.max(1, max);
        }

        @Override
        public void extent(final long length, final int flags) {
            if (stopped || length <= 0) {
                return;
            }
            if (flags == pendingFlags) {
                pendingLength += length;
                return;
            }
            if (pendingFlags >= 0) {
                emit();
                if (emitted >= max) {
                    stopped = true;
                    return;
                }
            }
            pendingFlags = flags;
            pendingLength = length;
        }

        boolean stopped() {
            return stopped;
        }

        private void emit() {
            out.extent(pendingLength, pendingFlags);
            described += pendingLength;
            emitted++;
            pendingFlags = -1;
        }

        long finish() {
            if (pendingFlags >= 0 && !stopped) {
                emit();
            }
            return described;
        }
    }
}
