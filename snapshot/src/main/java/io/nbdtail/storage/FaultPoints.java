package io.nbdtail.storage;

import java.io.IOException;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Fault injection for the crash tests, one mechanism for every module: named points in the metadata steps of the
 * snapshot layers and in the mirror's cutover where a test makes the process die as {@code kill -9} would, or a
 * step fail.
 *
 * <p>Enabled only by the system property {@code nbdtail.test.faults}, which production never sets: a
 * comma-separated list of {@code POINT=ACTION}, where ACTION is {@code halt} (halt the first time the point is
 * reached), {@code halt:N} (the N-th time) or {@code fail} (throw an {@link IOException} there). For example
 * {@code -Dnbdtail.test.faults=manifest.renamed=halt:2} or {@code source.handing-over=halt}. A halt exits with 137
 * and runs no shutdown hook, no finally block and flushes nothing. Without the property a point costs one
 * static final read. The points are listed in {@code docs/testing.md} and {@code docs/mirroring.md}.
 */
public final class FaultPoints {
    private static final Map<String, String> FAULTS = parse(System.getProperty("nbdtail.test.faults"));
    private static final Map<String, AtomicInteger> REACHED = new ConcurrentHashMap<>();

    private FaultPoints() {
    }

    private static Map<String, String> parse(final String spec) {
        final Map<String, String> faults = new HashMap<>();
        if (spec == null || spec.isBlank()) {
            return Map.of();
        }
        for (final String entry : spec.split(",")) {
            final int eq = entry.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("nbdtail.test.faults: '" + entry + "' is not POINT=ACTION");
            }
            faults.put(entry.substring(0, eq).trim(), entry.substring(eq + 1).trim());
        }
        System.err.println("nbdtail: TEST FAULT INJECTION ENABLED: " + faults);
        return Map.copyOf(faults);
    }

    /** Halts the process here if a test asked for it; a point where a failure cannot be thrown. */
    public static void reach(final String point) {
        if (!FAULTS.isEmpty()) {
            act(point, FAULTS.get(point));
        }
    }

    /** Halts the process or throws here if a test asked for it. */
    public static void hit(final String point) throws IOException {
        if (FAULTS.isEmpty()) {
            return;
        }
        final String action = FAULTS.get(point);
        if ("fail".equals(action)) {
            System.err.println("nbdtail: fault point " + point + ": failing (test fault injection)");
            throw new IOException("injected fault at " + point);
        }
        act(point, action);
    }

    private static void act(final String point, final String action) {
        if (action == null) {
            return;
        }
        if (!action.startsWith("halt")) {
            throw new IllegalStateException("fault action '" + action + "' at " + point + " is not halt or halt:N"
                + " (fail is only possible where the point can throw)");
        }
        final int nth = action.equals("halt") ? 1 : Integer.parseInt(action.substring("halt:".length()));
        if (REACHED.computeIfAbsent(point, p -> new AtomicInteger()).incrementAndGet() == nth) {
            System.err.println("nbdtail: crash point " + point + " reached; halting (test fault injection)");
            System.err.flush();
            Runtime.getRuntime().halt(137);
        }
    }
}
