package io.nbdtail.server;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.management.ManagementFactory;
import java.lang.management.MemoryMXBean;
import java.lang.management.MemoryUsage;
import java.time.Instant;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Notices when the whole JVM stood still (a long GC pause, a stopped or starved process) or runs short of heap
 * (reliability.md R7): a thread that sleeps {@value #TICK_MILLIS} ms at a time and measures how late it woke.
 * Replies are only delayed by a stall, never lost or cut short, but the brain and the operator should know:
 * stalls are logged, counted in {@code /metrics}, and make {@code GET /v1/status} report {@code degraded} for a
 * minute.
 */
public final class StallWatchdog implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(StallWatchdog.class);
    static final long TICK_MILLIS = 100;
    /** How long after a stall the server still reports it in its health. */
    private static final long RECENT_MILLIS = 60_000;
    private static final double HEAP_WARNING = 0.9;

    private final long thresholdMillis;
    private final Thread thread;
    private final AtomicLong stalls = new AtomicLong();
    private final AtomicLong longestMillis = new AtomicLong();
    private volatile long lastStallMillis;
    private volatile long lastStallAt;
    private volatile boolean heapWarned;
    private volatile boolean running = true;

    /** @param thresholdMillis a wake-up later than this counts as a stall. */
    public StallWatchdog(final long thresholdMillis) {
        this(thresholdMillis, true);
    }

    /** @param start {@code false} for tests that feed {@link #checkHeap} themselves. */
    StallWatchdog(final long thresholdMillis, final boolean start) {
        this.thresholdMillis = thresholdMillis;
        this.thread = Thread.ofPlatform().daemon().name("nbdtail-stall-watchdog").unstarted(this::run);
        thread.setPriority(Thread.MAX_PRIORITY);
        if (start) {
            thread.start();
        }
    }

    private void run() {
        final MemoryMXBean memory = ManagementFactory.getMemoryMXBean();
        long before = System.nanoTime();
        while (running) {
            try {
                Thread.sleep(TICK_MILLIS);
            } catch (final InterruptedException e) {
                return;
            }
            final long now = System.nanoTime();
            final long late = TimeUnit.NANOSECONDS.toMillis(now - before) - TICK_MILLIS;
            before = now;
            if (late >= thresholdMillis) {
                stalls.incrementAndGet();
                longestMillis.accumulateAndGet(late, Math::max);
                lastStallMillis = late;
                lastStallAt = System.currentTimeMillis();
                LOG.warn("the server stood still for {} ms (a long GC pause, or the process was stopped or starved"
                    + " of CPU); NBD replies were delayed, not lost. If this repeats, check the heap size and the"
                    + " machine's load", late);
            }
            checkHeap(memory.getHeapMemoryUsage());
        }
    }

    /** One look at the heap; the watchdog's thread calls it every tick. */
    void checkHeap(final MemoryUsage heap) {
        if (heap.getMax() <= 0) {
            return;
        }
        final boolean high = heap.getUsed() > HEAP_WARNING * heap.getMax();
        if (high && !heapWarned) {
            LOG.warn("heap {} MiB used of {} MiB: close to the limit; expect long GC pauses. Give the server more"
                + " heap (NBDTAIL_JAVA_OPTS=-Xmx...)", heap.getUsed() >> 20, heap.getMax() >> 20);
        }
        heapWarned = high;
    }

    /** Stalls seen since the start. */
    public long stalls() {
        return stalls.get();
    }

    public long longestMillis() {
        return longestMillis.get();
    }

    /** The last stall's length, or 0 if there was none. */
    public long lastStallMillis() {
        return lastStallMillis;
    }

    /** When the last stall ended, or {@code null}. */
    public Instant lastStallAt() {
        return lastStallAt == 0 ? null : Instant.ofEpochMilli(lastStallAt);
    }

    /** Whether a stall ended within the last minute, or the heap is close to its limit. */
    public boolean troubled() {
        return heapWarned || lastStallAt != 0 && System.currentTimeMillis() - lastStallAt < RECENT_MILLIS;
    }

    public boolean heapHigh() {
        return heapWarned;
    }

    @Override
    public void close() {
        running = false;
        thread.interrupt();
    }
}
