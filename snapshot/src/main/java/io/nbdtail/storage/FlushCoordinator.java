package io.nbdtail.storage;

import org.HdrHistogram.Histogram;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.HdrHistogram.Recorder;

import java.util.ArrayList;
import java.util.concurrent.Executor;
import java.util.concurrent.atomic.LongAdder;

/**
 * Group commit: concurrent FLUSH requests and FUA writes of one volume share one {@code fdatasync}.
 *
 * <p>The rule it keeps (NBD spec, "Ordering of messages and writes"): every write whose reply was sent before a
 * FLUSH was received must be durable before that FLUSH is answered. A write is replied to only after its
 * {@code pwrite} returned, so a sync that <em>starts</em> after a waiter joined covers everything the waiter
 * cares about, on every connection (which is what makes {@code CAN_MULTI_CONN} true). A waiter that joins
 * while a sync is running therefore waits for the next one; it never rides on a sync that began before it.
 *
 * <p>When a sync runs:
 * <ol>
 *   <li>a waiter arrives and no sync is running: one starts at once on the storage executor;</li>
 *   <li>waiters arrive while a sync runs: they are collected, and one sync for all of them starts as soon as
 *       the running one ends.</li>
 * </ol>
 *
 * <p>A failed sync is never retried into a success (fsyncgate): its error goes to every waiter of that batch,
 * and the {@link SyncFailureListener} is told, so the volume can stop taking writes.
 */
public final class FlushCoordinator implements Runnable {
    private static final Logger LOG = LoggerFactory.getLogger(FlushCoordinator.class);

    /** Told once per failed sync, before the waiters of that batch are answered. */
    @FunctionalInterface
    public interface SyncFailureListener {
        void onSyncFailed(StorageException failure);
    }

    private final BlockDevice device;
    private final Executor executor;
    private final SyncFailureListener failureListener;
    private final LongAdder syncs = new LongAdder();
    private final LongAdder waitersServed = new LongAdder();
    private final LongAdder failures = new LongAdder();
    private final Recorder syncLatency = new Recorder(3);
    private final Histogram syncLatencyTotal = new Histogram(3);

    private final Object lock = new Object();
    private ArrayList<FlushWaiter> pending = new ArrayList<>();
    private ArrayList<FlushWaiter> spare = new ArrayList<>();
    private boolean running;
    /** The first sync failure; sticky (see {@link #syncOnce()}). */
    private volatile StorageException failed;

    public FlushCoordinator(final BlockDevice device, final Executor executor,
                            final SyncFailureListener failureListener) {
        this.device = device;
        this.executor = executor;
        this.failureListener = failureListener;
    }

    /** Queues {@code waiter} for the next sync that starts from now on. */
    public void flush(final FlushWaiter waiter) {
        final boolean start;
        synchronized (lock) {
            pending.add(waiter);
            start = !running;
            running = true;
        }
        if (start) {
            executor.execute(this);
        }
    }

    /** Syncs now on the calling thread, outside any batch; used at close. Fails at once after a failed sync. */
    public void syncNow() throws StorageException {
        final StorageException earlier = failed;
        if (earlier != null) {
            throw earlier;
        }
        device.sync();
        syncs.increment();
    }

    /** Number of {@code fdatasync} calls made so far. */
    public long syncCount() {
        return syncs.sum();
    }

    /** Number of waiters answered so far; {@code waitersServed / syncCount} is the batching factor. */
    public long waitersServed() {
        return waitersServed.sum();
    }

    public long syncFailures() {
        return failures.sum();
    }

    /** Duration of every {@code fdatasync} so far, in nanoseconds. One caller at a time (the metrics scrape). */
    public synchronized Histogram syncLatency() {
        syncLatencyTotal.add(syncLatency.getIntervalHistogram());
        return syncLatencyTotal;
    }

    @Override
    public void run() {
        while (true) {
            final ArrayList<FlushWaiter> batch;
            synchronized (lock) {
                if (pending.isEmpty()) {
                    running = false;
                    return;
                }
                batch = pending;
                pending = spare != null ? spare : new ArrayList<>();
                spare = null;
            }
            try {
                final StorageException failure = syncOnce();
                final int n = batch.size();
                waitersServed.add(n);
                for (int i = 0; i < n; i++) {
                    try {
                        batch.get(i).onFlushed(failure);
                    } catch (final RuntimeException | Error e) {
                        LOG.error("a flush waiter failed; the others are still answered", e);
                    }
                }
            } finally {
                batch.clear();
                synchronized (lock) {
                    spare = batch;
                }
            }
        }
    }

    /**
     * One {@code fdatasync}, unless an earlier one failed: then the failure stands for every later waiter. The
     * kernel reports a writeback error once; a second sync would return 0 over pages it already dropped, so a
     * FLUSH queued behind a failed sync must not be told its writes are durable.
     */
    private StorageException syncOnce() {
        final StorageException earlier = failed;
        if (earlier != null) {
            return earlier;
        }
        StorageException failure = null;
        final long start = System.nanoTime();
        try {
            device.sync();
            syncs.increment();
        } catch (final StorageException e) {
            failure = e.kind() == StorageException.Kind.IO_ERROR ? e
                : new StorageException(StorageException.Kind.IO_ERROR, e.getMessage(), e);
        } catch (final RuntimeException e) {
            failure = new StorageException(StorageException.Kind.IO_ERROR, "fdatasync failed: " + e, e);
        }
        syncLatency.recordValue(Math.max(0, System.nanoTime() - start));
        if (failure != null) {
            failed = failure;
            failures.increment();
            try {
                failureListener.onSyncFailed(failure);
            } catch (final RuntimeException e) {
                LOG.error("sync failure listener failed", e);
            }
        }
        return failure;
    }

    /** Waits until no sync is running or queued; used when the volume closes. */
    public void awaitIdle(final long timeoutMillis) throws InterruptedException {
        final long deadline = System.currentTimeMillis() + timeoutMillis;
        synchronized (lock) {
            while (running && System.currentTimeMillis() < deadline) {
                lock.wait(10);
            }
        }
    }
}
