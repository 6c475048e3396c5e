package io.nbdtail.storage;

import java.nio.ByteBuffer;

/**
 * Byte-addressed storage behind one volume: a sparse file or a block device. Implementations are thread-safe
 * for concurrent positional I/O; callers order writes to the same range themselves (the NBD protocol leaves
 * overlapping in-flight writes undefined).
 *
 * <p>Every method blocks: call it from a storage thread, never from an event loop.
 */
public interface BlockDevice extends AutoCloseable {
    /** The size in bytes. */
    long size();

    /** {@code true} for a real block device, {@code false} for a file. */
    boolean isBlockDevice();

    /** Reads exactly {@code dst.remaining()} bytes at {@code offset}. */
    void read(ByteBuffer dst, long offset) throws StorageException;

    /** Writes all of {@code src} at {@code offset}; not durable until {@link #sync()}. */
    void write(ByteBuffer src, long offset) throws StorageException;

    /**
     * Reads exactly {@code length} bytes at {@code offset} into native memory at {@code address}. The hot path
     * of the NBD server: no {@link ByteBuffer} view is needed, so nothing is allocated per call.
     */
    void read(long address, int length, long offset) throws StorageException;

    /** Writes {@code length} bytes of native memory at {@code address} to {@code offset}. */
    void write(long address, int length, long offset) throws StorageException;

    /**
     * Makes the range read as zeros.
     *
     * @param mayUnmap {@code true} if the space may be released (a hole), {@code false} to keep it allocated.
     * @param fastOnly {@code true} to fail with {@link StorageException.Kind#NOT_SUPPORTED} instead of falling
     *                 back to writing zeros.
     */
    void writeZeroes(long offset, long length, boolean mayUnmap, boolean fastOnly) throws StorageException;

    /** Releases the range if the device can; the contents afterwards are unspecified (a hint, like TRIM). */
    void discard(long offset, long length) throws StorageException;

    /**
     * Describes the allocation of {@code [offset, offset + length)} to {@code sink}, stopping after
     * {@code maxExtents} extents.
     *
     * @return the number of bytes described, at least 1 when {@code length > 0}.
     */
    long allocation(long offset, long length, ExtentSink sink, int maxExtents) throws StorageException;

    /** A read-ahead hint; failures are ignored. */
    void prefetch(long offset, long length);

    /**
     * Grows the device to {@code newSize} bytes; the new range reads as zeros. Only files can grow; a block
     * device fails with {@link StorageException.Kind#NOT_SUPPORTED}.
     */
    void grow(long newSize) throws StorageException;

    /** {@code fdatasync}: everything written before the call is durable when it returns. */
    void sync() throws StorageException;

    @Override
    void close();
}
