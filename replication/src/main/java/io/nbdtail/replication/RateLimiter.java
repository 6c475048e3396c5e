package io.nbdtail.replication;

import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

/**
 * A token bucket in bytes per second, changeable while in use. A limit of 0 means unlimited. The bucket holds at
 * most a tenth of a second of tokens, so a raised limit takes effect at once and a lowered one within 100 ms.
 */
public final class RateLimiter {
    private volatile long bytesPerSecond;
    private long available;
    private long lastNanos = System.nanoTime();

    public RateLimiter(final long bytesPerSecond) {
        this.bytesPerSecond = bytesPerSecond;
    }

    public long limit() {
        return bytesPerSecond;
    }

    public void limit(final long bytesPerSecond) {
        if (bytesPerSecond < 0) {
            throw new IllegalArgumentException("rate limit must be >= 0 (0: unlimited)");
        }
        this.bytesPerSecond = bytesPerSecond;
    }

    /** Waits until {@code bytes} may go; returns at once when unlimited. */
    public void acquire(final long bytes) throws InterruptedException {
        while (true) {
            final long wait;
            synchronized (this) {
                final long rate = bytesPerSecond;
                if (rate == 0) {
                    return;
                }
                refill(rate);
                if (available >= 0) {
                    available -= bytes;
                    return;
                }
                wait = TimeUnit.SECONDS.toNanos(1) * -available / rate;
            }
            LockSupport.parkNanos(Math.min(wait, TimeUnit.MILLISECONDS.toNanos(100)));
            if (Thread.interrupted()) {
                throw new InterruptedException();
            }
        }
    }

    private void refill(final long rate) {
        final long now = System.nanoTime();
        final long elapsed = now - lastNanos;
        lastNanos = now;
        final long add = (long) ((double) elapsed * rate / TimeUnit.SECONDS.toNanos(1));
        available = Math.min(rate / 10, available + add);
    }
}
