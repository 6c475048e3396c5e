package io.nbdtail.volume;

import io.nbdtail.layer.LayeredBlockDevice;
import io.nbdtail.layer.LayeredDevice;
import io.nbdtail.storage.BlockDevice;
import io.nbdtail.storage.ExtentSink;
import io.nbdtail.storage.FlushCoordinator;
import io.nbdtail.storage.FlushWaiter;
import io.nbdtail.storage.StorageException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.ByteBuffer;
import java.util.List;
import java.util.concurrent.Executor;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

/**
 * An open volume: its metadata, its bytes and its durability state. This is what the NBD engine serves.
 *
 * <p>Once a sync has failed, the volume is <em>failed</em>: writes, trims, zeroing and flushes are refused with
 * {@link StorageException.Kind#VOLUME_FAILED} until an operator intervenes, because the kernel may already have
 * dropped the dirty pages that the sync could not write, and a later sync would report success over lost data.
 * Reads keep working.
 *
 * <p>Methods that touch the disc block; call them from a storage thread.
 */
public final class Volume implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Volume.class);

    private volatile VolumeMetadata metadata;
    private final BlockDevice device;
    private final FlushCoordinator flusher;
    private final AutoCloseable lock;
    private final AtomicReference<StorageException> failure = new AtomicReference<>();
    private final AtomicBoolean closed = new AtomicBoolean();
    /** Device calls in progress; {@link #close()} waits for them, so no call ever uses a closed descriptor. */
    private final java.util.concurrent.atomic.AtomicInteger active = new java.util.concurrent.atomic.AtomicInteger();

    /**
     * @param lock released when the volume closes (the exclusive ownership of the volume by this process).
     */
    public Volume(final VolumeMetadata metadata, final BlockDevice device, final Executor storageExecutor,
                  final AutoCloseable lock) {
        this.metadata = metadata;
        this.device = device;
        this.lock = lock;
        this.flusher = new FlushCoordinator(device, storageExecutor, this::markFailed);
    }

    public VolumeMetadata metadata() {
        return metadata;
    }

    public String name() {
        return metadata.name();
    }

    public long size() {
        return device.size();
    }

    public boolean readOnly() {
        return metadata.readOnly();
    }

    public BlockDevice device() {
        return device;
    }

    public FlushCoordinator flusher() {
        return flusher;
    }

    /** Why the volume stopped taking writes, or {@code null} while it is healthy. */
    public StorageException failure() {
        return failure.get();
    }

    /** Stops the volume taking writes; the first failure is kept and logged, later ones only counted. */
    public void markFailed(final StorageException cause) {
        if (failure.compareAndSet(null, cause)) {
            LOG.error("volume {} stopped taking writes: {}. Reads still work. Writes since the last successful"
                + " flush may be lost; find and fix the disc fault, then restart the server.", metadata.name(),
                cause.getMessage());
        }
    }

    public void read(final ByteBuffer dst, final long offset) throws StorageException {
        enter();
        try {
            device.read(dst, offset);
        } finally {
            exit();
        }
    }

    public void write(final ByteBuffer src, final long offset) throws StorageException {
        checkWritable();
        final long length = src.remaining();
        final WriteObserver observer = beforeWrite(offset, length);
        enter();
        try {
            device.write(src, offset);
        } catch (final StorageException e) {
            throw failIfIoError(e);
        } finally {
            exit();
            afterWrite(observer, offset, length);
        }
    }

    /** Reads into native memory; see {@link BlockDevice#read(long, int, long)}. */
    public void read(final long address, final int length, final long offset) throws StorageException {
        enter();
        try {
            device.read(address, length, offset);
        } finally {
            exit();
        }
    }

    /** Writes from native memory; see {@link BlockDevice#write(long, int, long)}. */
    public void write(final long address, final int length, final long offset) throws StorageException {
        checkWritable();
        final WriteObserver observer = beforeWrite(offset, length);
        enter();
        try {
            device.write(address, length, offset);
        } catch (final StorageException e) {
            throw failIfIoError(e);
        } finally {
            exit();
            afterWrite(observer, offset, length);
        }
    }

    public void writeZeroes(final long offset, final long length, final boolean mayUnmap, final boolean fastOnly)
        throws StorageException {
        checkWritable();
        final WriteObserver observer = beforeWrite(offset, length);
        enter();
        try {
            device.writeZeroes(offset, length, mayUnmap, fastOnly);
        } catch (final StorageException e) {
            throw failIfIoError(e);
        } finally {
            exit();
            afterWrite(observer, offset, length);
        }
    }

    public void discard(final long offset, final long length) throws StorageException {
        checkWritable();
        final WriteObserver observer = beforeWrite(offset, length);
        enter();
        try {
            device.discard(offset, length);
        } catch (final StorageException e) {
            throw failIfIoError(e);
        } finally {
            exit();
            afterWrite(observer, offset, length);
        }
    }

    /**
     * A write that failed with EIO may have left some pages dirty and unwritable; like a failed sync, that
     * ends the volume's writable life. A full file system (ENOSPC) does not: qemu pauses the guest and retries
     * once space is freed.
     */
    private StorageException failIfIoError(final StorageException e) {
        if (e.kind() == StorageException.Kind.IO_ERROR) {
            markFailed(e);
        }
        return e;
    }

    public long allocation(final long offset, final long length, final ExtentSink sink, final int maxExtents)
        throws StorageException {
        enter();
        try {
            return device.allocation(offset, length, sink, maxExtents);
        } finally {
            exit();
        }
    }

    /**
     * {@code qemu:allocation-depth}: extents whose flags are depths (0 unallocated, 1 the top layer, 2 the one
     * below, ...). A volume without layers has depth 1 wherever its file has data.
     */
    public long depth(final long offset, final long length, final ExtentSink sink, final int maxExtents)
        throws StorageException {
        enter();
        try {
            if (device instanceof LayeredBlockDevice layered) {
                return layered.depth(offset, length, sink, maxExtents);
            }
            return device.allocation(offset, length, (n, flags) -> sink.extent(n,
                (flags & ExtentSink.HOLE) != 0 ? 0 : 1), maxExtents);
        } finally {
            exit();
        }
    }

    /** The snapshots {@code qemu:dirty-bitmap:NAME} can be asked about, oldest first. */
    public List<String> dirtyBitmaps() {
        return device instanceof LayeredBlockDevice layered ? layered.dirtyBitmaps() : List.of();
    }

    /**
     * {@code qemu:dirty-bitmap:SNAPSHOT}: extents flagged 1 where the volume changed since the snapshot.
     *
     * @return the bytes described, or -1 if there is no such snapshot below the top layer (any more).
     */
    public long dirty(final String snapshot, final long offset, final long length, final ExtentSink sink,
                      final int maxExtents) throws StorageException {
        enter();
        try {
            return device instanceof LayeredBlockDevice layered
                ? layered.dirty(snapshot, offset, length, sink, maxExtents) : -1;
        } finally {
            exit();
        }
    }

    /** The volume's layers, for snapshot operations; {@code null} for a snapshot's read-only view. */
    public LayeredDevice layers() {
        return device instanceof LayeredDevice layered ? layered : null;
    }

    /**
     * Grows the volume. The caller records the new size durably (see {@link VolumeService#grow}); existing NBD
     * connections keep the size they negotiated, new ones see the new size.
     */
    void grow(final long newSize, final VolumeMetadata updated) throws StorageException {
        checkWritable();
        device.grow(newSize);
        metadata = updated;
    }

    public void prefetch(final long offset, final long length) {
        if (!closed.get()) {
            device.prefetch(offset, length);
        }
    }

    /**
     * Makes every write completed before this call durable, then tells {@code waiter}. Shares the sync with
     * concurrent callers (see {@link FlushCoordinator}).
     */
    public void flush(final FlushWaiter waiter) {
        final StorageException failed = failure.get();
        if (failed != null) {
            waiter.onFlushed(failedException(failed));
            return;
        }
        if (closed.get()) {
            waiter.onFlushed(new StorageException(StorageException.Kind.VOLUME_FAILED, "volume " + metadata.name()
                + " is closed"));
            return;
        }
        flusher.flush(waiter);
    }

    /** Enters the I/O gate; fails once the volume is closing. Pair with {@link #exit()} in a finally. */
    private void enter() throws StorageException {
        active.incrementAndGet();
        if (closed.get()) {
            active.decrementAndGet();
            throw new StorageException(StorageException.Kind.VOLUME_FAILED, "volume " + metadata.name()
                + " is closed");
        }
    }

    private void exit() {
        active.decrementAndGet();
    }

    private void checkWritable() throws StorageException {
        final StorageException failed = failure.get();
        if (failed != null) {
            throw failedException(failed);
        }
    }

    private StorageException failedException(final StorageException cause) {
        return new StorageException(StorageException.Kind.VOLUME_FAILED, "volume " + metadata.name()
            + " stopped taking writes after: " + cause.getMessage(), cause);
    }

    /**
     * Stops I/O, waits for device calls in progress and for queued syncs, syncs (unless failed) and releases the
     * device and the lock. New calls fail with {@link StorageException.Kind#VOLUME_FAILED}. Idempotent.
     */
    @Override
    public void close() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        try {
            final long deadline = System.currentTimeMillis() + 30_000;
            while (active.get() > 0 && System.currentTimeMillis() < deadline) {
                Thread.sleep(1);
            }
            flusher.awaitIdle(Math.max(1, deadline - System.currentTimeMillis()));
            if (active.get() > 0) {
                LOG.warn("volume {}: {} device call(s) still running after 30 s; closing anyway", metadata.name(),
                    active.get());
            }
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        try {
            if (failure.get() == null && !metadata.readOnly()) {
                flusher.syncNow();
            }
        } catch (final StorageException e) {
            markFailed(e);
        } finally {
            device.close();
            try {
                lock.close();
            } catch (final Exception e) {
                LOG.warn("volume {}: releasing the lock failed: {}", metadata.name(), e.toString());
            }
        }
    }

    // ------------------------------------------------------------------------------ write observer (mirroring)

    /**
     * Sees every change to the volume's bytes (write, write-zeroes, discard): the live mirror's dirty tracking and
     * its write gate (throttling, the cutover freeze, the fence after a move).
     */
    public interface WriteObserver {
        /**
         * Called before a change reaches the device; may wait (throttle, freeze) or refuse the change by throwing.
         */
        void beforeWrite(long offset, long length) throws StorageException;

        /**
         * Called after the change, whether it succeeded or not (a failed write may have changed some bytes).
         *
         * @param admitted whether this observer's {@link #beforeWrite} admitted the change; {@code false} for a
         *                 change that started before the observer was installed.
         */
        void afterWrite(long offset, long length, boolean admitted);
    }

    private volatile WriteObserver writeObserver;

    /**
     * Installs the observer ({@code null} removes it). A change already under way when it is installed is still
     * reported to {@link WriteObserver#afterWrite} (with {@code admitted == false}), so no change is missed.
     */
    public void writeObserver(final WriteObserver observer) {
        this.writeObserver = observer;
    }

    /** The installed observer, or {@code null}. */
    public WriteObserver writeObserver() {
        return writeObserver;
    }

    private WriteObserver beforeWrite(final long offset, final long length) throws StorageException {
        final WriteObserver observer = writeObserver;
        if (observer != null) {
            observer.beforeWrite(offset, length);
        }
        return observer;
    }

    private void afterWrite(final WriteObserver admittedBy, final long offset, final long length) {
        // The observer installed now, not the one at the start: a change that began before a mirror started
        // must still be marked dirty for it.
        final WriteObserver observer = writeObserver;
        if (observer != null) {
            observer.afterWrite(offset, length, observer == admittedBy);
        } else if (admittedBy != null) {
            admittedBy.afterWrite(offset, length, true);
        }
    }

    @Override
    public String toString() {
        return "Volume{" + metadata.name() + ", " + device + '}';
    }
}
