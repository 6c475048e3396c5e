package io.nbdtail.replication;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.util.HashMap;
import java.util.Map;

/**
 * Fault injection for the crash tests of the cutover: named points in the source's and destination's cutover
 * steps where a test makes the process die ({@code halt}, as kill -9 would) or a step fail ({@code fail}).
 *
 * <p>Enabled only by the system property {@code nbdtail.test.faults} (for example
 * {@code -Dnbdtail.test.faults=source.handing-over=halt}), which production never sets; without it every
 * {@link #hit} is a no-op.
 */
public final class FaultPoints {
    private static final Logger LOG = LoggerFactory.getLogger(FaultPoints.class);
    private static final Map<String, String> FAULTS = parse(System.getProperty("nbdtail.test.faults"));

    private FaultPoints() {
    }

    private static Map<String, String> parse(final String spec) {
        final Map<String, String> map = new HashMap<>();
        if (spec != null && !spec.isBlank()) {
            for (final String entry : spec.split(",")) {
                final int eq = entry.indexOf('=');
                map.put(entry.substring(0, eq).trim(), entry.substring(eq + 1).trim());
            }
            LOG.warn("TEST FAULT INJECTION ENABLED: {}", map);
        }
        return map;
    }

    /** Runs the fault configured for {@code point}, if any. */
    public static void hit(final String point) throws IOException {
        if (FAULTS.isEmpty()) {
            return;
        }
        final String action = FAULTS.get(point);
        if (action == null) {
            return;
        }
        LOG.warn("fault point {}: {}", point, action);
        switch (action) {
            case "halt" -> Runtime.getRuntime().halt(137);
            case "fail" -> throw new IOException("injected fault at " + point);
            default -> throw new IllegalStateException("unknown fault action " + action);
        }
    }
}
