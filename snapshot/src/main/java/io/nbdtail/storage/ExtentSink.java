package io.nbdtail.storage;

/**
 * Receives the allocation of a range as consecutive extents, in order, without gaps.
 *
 * <p>The flag bits are deliberately the same as NBD's {@code base:allocation} states, so the network side can
 * pass them through unchanged.
 */
@FunctionalInterface
public interface ExtentSink {
    /** Not allocated: a write here may need new space. */
    int HOLE = 1;
    /** Reads as zeros. */
    int ZERO = 2;

    /**
     * @param length the extent's length, at least 1.
     * @param flags  {@link #HOLE} and/or {@link #ZERO}, or 0 for data.
     */
    void extent(long length, int flags);
}
