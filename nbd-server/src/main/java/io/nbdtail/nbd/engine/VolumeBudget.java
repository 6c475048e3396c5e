package io.nbdtail.nbd.engine;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Requests and bytes being served for one volume across all its connections, so that many connections to one
 * volume cannot take every storage thread and unbounded memory ({@code maxInFlightRequestsPerVolume},
 * {@code maxInFlightBytesPerVolume}). A connection with nothing in flight may always start one request, so no
 * connection starves and none deadlocks; the caps are therefore exceeded by at most one request per connection.
 *
 * <p>Connections that found no room register to be woken when room is freed; they stop reading meanwhile,
 * exactly as for their own per-connection limits. The check is not atomic with the increment: concurrent event
 * loops may overshoot by a request each, which is harmless.
 */
final class VolumeBudget {
    private final AtomicInteger requests = new AtomicInteger();
    private final AtomicLong bytes = new AtomicLong();
    private final Set<NbdTransmissionHandler> blocked = ConcurrentHashMap.newKeySet();

    boolean hasRoom(final long weight, final NbdServerConfig config) {
        return requests.get() < config.maxInFlightRequestsPerVolume
            && bytes.get() + weight <= config.maxInFlightBytesPerVolume;
    }

    void acquire(final long weight) {
        requests.incrementAndGet();
        bytes.addAndGet(weight);
    }

    void release(final long weight) {
        requests.decrementAndGet();
        bytes.addAndGet(-weight);
        if (!blocked.isEmpty()) {
            for (final NbdTransmissionHandler h : blocked) {
                if (blocked.remove(h)) {
                    h.roomFreed();
                }
            }
        }
    }

    /** Registers {@code h} to be woken by the next release. Check for room again after calling this. */
    void await(final NbdTransmissionHandler h) {
        blocked.add(h);
    }

    void forget(final NbdTransmissionHandler h) {
        blocked.remove(h);
    }

    int requests() {
        return requests.get();
    }

    long bytes() {
        return bytes.get();
    }
}
