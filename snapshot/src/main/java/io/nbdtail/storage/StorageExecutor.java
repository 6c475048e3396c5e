package io.nbdtail.storage;

import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.Executor;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The threads that do disc I/O. A fixed pool of platform threads: a blocking {@code pread} or {@code fdatasync}
 * holds its thread.
 *
 * <p>The queue is an array, so queuing a task allocates nothing. It is bounded in practice by the NBD server's
 * per-connection in-flight limits (connections x requests); should it ever fill, the task runs on a virtual
 * thread of its own rather than blocking or failing the caller, which is usually an event loop. After
 * {@link #shutdown} a task runs on the caller.
 */
public final class StorageExecutor implements Executor, AutoCloseable {
    /** Queue capacity: far above maxConnections x maxInFlightRequests with the default limits. */
    private static final int QUEUE_CAPACITY = 1 << 18;

    private final ThreadPoolExecutor pool;

    /** Plain daemon threads named {@code nbdtail-io-N}. */
    public StorageExecutor(final int threads) {
        this(threads, plainThreads());
    }

    /**
     * @param factory makes the storage threads. The NBD server passes one that makes Netty
     *                {@code FastThreadLocalThread}s: on any other thread Netty's object pools and the pooled
     *                allocator's thread cache miss on every call, so each request would allocate.
     */
    public StorageExecutor(final int threads, final ThreadFactory factory) {
        if (threads < 1) {
            throw new IllegalArgumentException("storage threads must be at least 1, got " + threads);
        }
        pool = new ThreadPoolExecutor(threads, threads, 0, TimeUnit.MILLISECONDS,
            new ArrayBlockingQueue<>(QUEUE_CAPACITY), factory, (task, executor) -> {
                if (executor.isShutdown()) {
                    // Only late work reaches here (a sync for a volume that is closing); the event loops have
                    // stopped, so the caller is never one of them. Never drop it: a waiter would hang.
                    task.run();
                } else {
                    Thread.ofVirtual().name("nbdtail-io-overflow").start(task);
                }
            });
        pool.prestartAllCoreThreads();
    }

    private static ThreadFactory plainThreads() {
        final AtomicInteger counter = new AtomicInteger();
        return r -> {
            final Thread t = new Thread(r, "nbdtail-io-" + counter.incrementAndGet());
            t.setDaemon(true);
            return t;
        };
    }

    @Override
    public void execute(final Runnable task) {
        pool.execute(task);
    }

    public int threads() {
        return pool.getCorePoolSize();
    }

    /** Tasks queued and not yet started. */
    public int queued() {
        return pool.getQueue().size();
    }

    /** Lets queued tasks finish, waiting up to {@code timeoutMillis}. */
    public boolean shutdown(final long timeoutMillis) throws InterruptedException {
        pool.shutdown();
        return pool.awaitTermination(timeoutMillis, TimeUnit.MILLISECONDS);
    }

    @Override
    public void close() {
        pool.shutdownNow();
    }
}
