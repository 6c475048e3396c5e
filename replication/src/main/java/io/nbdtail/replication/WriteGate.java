package io.nbdtail.replication;

import io.nbdtail.storage.StorageException;
import io.nbdtail.volume.Volume;

import java.util.concurrent.TimeUnit;

/**
 * The mirror's hook on the source volume's write path: marks every change dirty, delays guest writes when the
 * mirror must catch up (bounded: never more than {@link #MAX_THROTTLE_NANOS} per write), holds them during the
 * cutover freeze, and refuses them once the volume has moved.
 *
 * <p>The freeze is a quiesce barrier, not a join: it stops admitting changes and waits for the admitted ones to
 * finish. Reads and flushes never pass through here, so they keep being served while frozen.
 */
public final class WriteGate implements Volume.WriteObserver {
    /** The longest a throttled write waits, so a throttled guest sees slow writes, never a stall. */
    static final long MAX_THROTTLE_NANOS = TimeUnit.MILLISECONDS.toNanos(50);

    private final DirtyMap dirty;
    private final Object lock = new Object();
    private int admitted;
    private boolean frozen;
    private StorageException fence;
    private volatile long throttleBytesPerSecond;
    private long throttleAvailable;
    private long throttleLast = System.nanoTime();

    public WriteGate(final DirtyMap dirty) {
        this.dirty = dirty;
    }

    @Override
    public void beforeWrite(final long offset, final long length) throws StorageException {
        // Charged by what the write costs the mirror (whole chunks), not by its own size: a 4 KiB write
        // dirties a whole chunk, and only that keeps the dirty growth below the copy rate.
        final long chunk = dirty.chunkSize();
        delay(((offset + length + chunk - 1) / chunk - offset / chunk) * chunk);
        synchronized (lock) {
            while (frozen && fence == null) {
                try {
                    lock.wait();
                } catch (final InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new StorageException(StorageException.Kind.IO_ERROR, "interrupted while the volume was"
                        + " frozen for a mirror cutover");
                }
            }
            if (fence != null) {
                throw fence;
            }
            admitted++;
        }
    }

    @Override
    public void afterWrite(final long offset, final long length, final boolean wasAdmitted) {
        dirty.mark(offset, length);
        if (wasAdmitted) {
            synchronized (lock) {
                if (--admitted == 0) {
                    lock.notifyAll();
                }
            }
        }
    }

    /**
     * Limits what guest writes dirty to about {@code bytesPerSecond} (in whole chunks), with bounded delays; 0 turns
     * throttling off.
     */
    public void throttle(final long bytesPerSecond) {
        this.throttleBytesPerSecond = bytesPerSecond;
    }

    public long throttleRate() {
        return throttleBytesPerSecond;
    }

    private void delay(final long length) {
        final long rate = throttleBytesPerSecond;
        if (rate <= 0) {
            return;
        }
        final long waitNanos;
        synchronized (this) {
            final long now = System.nanoTime();
            throttleAvailable = Math.min(rate / 20, throttleAvailable
                + (long) ((double) (now - throttleLast) * rate / TimeUnit.SECONDS.toNanos(1)));
            throttleLast = now;
            throttleAvailable -= length;
            waitNanos = throttleAvailable >= 0 ? 0
                : Math.min(MAX_THROTTLE_NANOS, TimeUnit.SECONDS.toNanos(1) * -throttleAvailable / rate);
        }
        if (waitNanos > 0) {
            try {
                TimeUnit.NANOSECONDS.sleep(waitNanos);
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /**
     * Stops admitting changes and waits for the admitted ones to finish.
     *
     * @return {@code true} once nothing is in flight (frozen); {@code false} after {@code timeoutMillis}, in which
     * case the gate is open again.
     */
    public boolean freeze(final long timeoutMillis) throws InterruptedException {
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
        synchronized (lock) {
            frozen = true;
            while (admitted > 0) {
                final long left = deadline - System.nanoTime();
                if (left <= 0) {
                    frozen = false;
                    lock.notifyAll();
                    return false;
                }
                TimeUnit.NANOSECONDS.timedWait(lock, left);
            }
            return true;
        }
    }

    public void unfreeze() {
        synchronized (lock) {
            frozen = false;
            lock.notifyAll();
        }
    }

    public boolean frozen() {
        synchronized (lock) {
            return frozen;
        }
    }

    /** Refuses every change from now on with {@code why}, including those held by the freeze. */
    public void fence(final StorageException why) {
        synchronized (lock) {
            fence = why;
            lock.notifyAll();
        }
    }
}
