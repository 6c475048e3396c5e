package io.nbdtail.layer;

import java.util.concurrent.atomic.AtomicInteger;

/**
 * Crash points for tests: with the system property {@code nbdtail.test.crash-at=POINT} (or {@code POINT:N} for
 * the N-th time it is reached), the process halts at that point as if killed with {@code kill -9}: no shutdown
 * hooks, no finally blocks, nothing flushed. Production never sets the property; a disabled point costs one
 * static final read.
 *
 * <p>Points are named after the step they follow or precede, such as {@code manifest.renamed}; the list is in
 * {@code docs/testing.md}.
 */
public final class FaultPoints {
    private static final String POINT;
    private static final int NTH;
    private static final AtomicInteger REACHED = new AtomicInteger();

    static {
        final String spec = System.getProperty("nbdtail.test.crash-at", "");
        final int colon = spec.lastIndexOf(':');
        POINT = colon < 0 ? spec : spec.substring(0, colon);
        NTH = colon < 0 ? 1 : Integer.parseInt(spec.substring(colon + 1));
    }

    private FaultPoints() {
    }

    /** Halts the process here if the tests asked for a crash at {@code point}. */
    public static void reach(final String point) {
        if (!POINT.isEmpty() && POINT.equals(point) && REACHED.incrementAndGet() == NTH) {
            System.err.println("nbdtail: crash point " + point + " reached; halting (test fault injection)");
            System.err.flush();
            Runtime.getRuntime().halt(137);
        }
    }
}
