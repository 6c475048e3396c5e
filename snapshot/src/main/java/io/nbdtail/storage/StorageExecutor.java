package io.nbdtail.storage;

import java.util.concurrent.Executor;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The threads that do disc I/O. A fixed pool of platform threads: a blocking {@code pread} or {@code fdatasync}
 * holds its thread.
 *
 * <p>Queuing a task and taking one allocate nothing: the queue is an array ring guarded by this executor's
 * monitor, and idle threads wait on that monitor. (A {@code ThreadPoolExecutor} over an
 * {@code ArrayBlockingQueue} allocates a condition node each time a thread goes idle, about 33 bytes per request
 * when requests come one at a time.) The queue is bounded in practice by the NBD server's per-connection
 * in-flight limits (connections x requests); should it ever fill, the task runs on a virtual thread of its own
 * rather than blocking or failing the caller, which is usually an event loop. After {@link #shutdown} a task
 * runs on the caller.
 */
public final class StorageExecutor implements Executor, AutoCloseable {
    /** Queue capacity: far above maxConnections x maxInFlightRequests with the default limits. */
    private static final int QUEUE_CAPACITY = 1 << 18;

    private final Thread[] workers;
    private final Runnable[] ring = new Runnable[QUEUE_CAPACITY];
    private int head;
    private int count;
    private int idle;
    private boolean shutdown;
    private int running;

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
        workers = new Thread[threads];
        final Runnable loop = this::work;
        for (int i = 0; i < threads; i++) {
            workers[i] = factory.newThread(loop);
        }
        running = threads;
        for (final Thread t : workers) {
            t.start();
        }
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
        synchronized (this) {
            if (!shutdown && count < ring.length) {
                ring[(head + count) & (ring.length - 1)] = task;
                count++;
                if (idle > 0) {
                    notify();
                }
                return;
            }
        }
        if (isShutdown()) {
            // Only late work reaches here (a sync for a volume that is closing); the event loops have stopped,
            // so the caller is never one of them. Never drop it: a waiter would hang.
            task.run();
        } else {
            Thread.ofVirtual().name("nbdtail-io-overflow").start(task);
        }
    }

    private void work() {
        final Thread self = Thread.currentThread();
        try {
            for (;;) {
                final Runnable task;
                synchronized (this) {
                    while (count == 0) {
                        if (shutdown) {
                            return;
                        }
                        idle++;
                        try {
                            wait();
                        } catch (final InterruptedException e) {
                            // close(): drop what is queued and stop.
                            return;
                        } finally {
                            idle--;
                        }
                    }
                    task = ring[head];
                    ring[head] = null;
                    head = (head + 1) & (ring.length - 1);
                    count--;
                }
                try {
                    task.run();
                } catch (final Throwable t) {
                    // Tasks handle their own failures; one that does not must not take a storage thread with it.
                    self.getUncaughtExceptionHandler().uncaughtException(self, t);
                }
            }
        } finally {
            synchronized (this) {
                running--;
                notifyAll();
            }
        }
    }

    public int threads() {
        return workers.length;
    }

    /** Tasks queued and not yet started. */
    public synchronized int queued() {
        return count;
    }

    private synchronized boolean isShutdown() {
        return shutdown;
    }

    /** Lets queued tasks finish, waiting up to {@code timeoutMillis}. */
    public boolean shutdown(final long timeoutMillis) throws InterruptedException {
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
        synchronized (this) {
            shutdown = true;
            notifyAll();
            while (running > 0) {
                final long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return false;
                }
                TimeUnit.NANOSECONDS.timedWait(this, left);
            }
            return true;
        }
    }

    /** Stops at once: queued tasks are dropped and running ones interrupted. */
    @Override
    public void close() {
        synchronized (this) {
            shutdown = true;
            while (count > 0) {
                ring[head] = null;
                head = (head + 1) & (ring.length - 1);
                count--;
            }
            notifyAll();
        }
        for (final Thread t : workers) {
            t.interrupt();
        }
    }
}
