package io.nbdtail.nbd.codec;

import io.nbdtail.nbd.protocol.NbdRequest;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/**
 * The bytes of request buffers held across the whole server — WRITE payloads from the moment their buffer is
 * allocated until the write is done, READ replies while they are filled and sent — against
 * {@code maxBufferedBytes}. It keeps the large requests of many clients from asking for more direct memory than
 * the JVM has (reliability.md R7): without it, enough 32 MiB writes at once end in {@link OutOfMemoryError}
 * and every connection that hit it is lost.
 *
 * <p>A reservation that does not fit waits instead of failing: its connection stops reading, so the client's
 * requests are delayed by TCP back-pressure, and it is woken when another request releases its bytes. When
 * nothing is held any reservation fits, so a limit below one request's size slows the server to one such
 * request at a time but never stops it. Waiting never blocks a thread.
 */
public final class BufferBudget implements NbdRequest.Reservation {
    private final long limit;
    private final AtomicLong used = new AtomicLong();
    private final LongAdder waits = new LongAdder();
    private final Set<Runnable> waiters = ConcurrentHashMap.newKeySet();
    private volatile long lastWaitMillis;

    /** @param limit bytes that may be held at once; any single reservation fits when nothing is held. */
    public BufferBudget(final long limit) {
        if (limit <= 0) {
            throw new IllegalArgumentException("buffer budget must be positive: " + limit);
        }
        this.limit = limit;
    }

    /** A budget that never makes anyone wait, for tools and tests that do not share memory with others. */
    public static BufferBudget unlimited() {
        return new BufferBudget(Long.MAX_VALUE);
    }

    /** Takes {@code bytes} if they fit (or nothing is held); {@code false} and nothing taken otherwise. */
    public boolean tryReserve(final long bytes) {
        long current;
        do {
            current = used.get();
            if (current != 0 && current + bytes > limit) {
                return false;
            }
        } while (!used.compareAndSet(current, current + bytes));
        return true;
    }

    /**
     * Takes {@code bytes} if they fit; otherwise registers {@code wake} to be run (on the releasing thread, once)
     * by the next release, and returns {@code false}. {@code wake} should be one object per waiter, so that
     * registering it again while it waits is free.
     */
    public boolean reserveOrWait(final long bytes, final Runnable wake) {
        if (tryReserve(bytes)) {
            return true;
        }
        if (waiters.add(wake)) {
            waits.increment();
            lastWaitMillis = System.currentTimeMillis();
        }
        // Look again: a release between the first try and the registration would otherwise be missed.
        if (tryReserve(bytes)) {
            waiters.remove(wake);
            return true;
        }
        return false;
    }

    /** Takes {@code bytes} whether they fit or not: for memory that is already held (a payload read in one go). */
    public void reserve(final long bytes) {
        used.addAndGet(bytes);
    }

    @Override
    public void release(final long bytes) {
        used.addAndGet(-bytes);
        if (!waiters.isEmpty()) {
            for (final Runnable wake : waiters) {
                if (waiters.remove(wake)) {
                    wake.run();
                }
            }
        }
    }

    /** Withdraws a waiter that is going away. */
    public void forget(final Runnable wake) {
        waiters.remove(wake);
    }

    public long limit() {
        return limit;
    }

    /** Bytes held now. */
    public long used() {
        return used.get();
    }

    /** How many reservations have had to wait since the start. */
    public long waits() {
        return waits.sum();
    }

    /** When a reservation last had to wait (milliseconds since the epoch), or 0 if none has. */
    public long lastWaitMillis() {
        return lastWaitMillis;
    }
}
