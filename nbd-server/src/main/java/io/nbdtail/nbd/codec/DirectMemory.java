package io.nbdtail.nbd.codec;

import io.netty.util.internal.PlatformDependent;

import java.lang.management.BufferPoolMXBean;
import java.lang.management.ManagementFactory;

/**
 * How much of the JVM's direct memory limit ({@code -XX:MaxDirectMemorySize}) is in use, from the JDK's own
 * count: for looking before a large allocation, since a failed one costs a {@code System.gc()} and up to half a
 * second of sleeping in the allocating thread.
 */
final class DirectMemory {
    private static final BufferPoolMXBean DIRECT = ManagementFactory.getPlatformMXBeans(BufferPoolMXBean.class)
        .stream().filter(p -> p.getName().equals("direct")).findFirst().orElse(null);
    private static final long LIMIT = PlatformDependent.maxDirectMemory();

    private DirectMemory() {
    }

    /** Whether {@code bytes} more fit under the limit now; {@code true} if the JVM does not say. */
    static boolean hasRoomFor(final long bytes) {
        return DIRECT == null || LIMIT <= 0 || DIRECT.getMemoryUsed() + bytes <= LIMIT;
    }

    static String describe() {
        return "direct memory in use " + (DIRECT == null ? -1 : DIRECT.getMemoryUsed()) + " of " + LIMIT + " bytes";
    }
}
