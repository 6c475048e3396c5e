package io.nbdtail.server;

import org.junit.jupiter.api.Test;

import java.lang.management.MemoryUsage;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * reliability.md R7, the heap half: a heap over 90 % full is reported (health {@code degraded} through
 * {@link StallWatchdog#troubled()}), and the report ends when the heap has room again. The stall half, a server
 * that stood still, is {@code StallIT}; request buffers short of direct memory are {@code MemoryPressureIT}.
 */
class StallWatchdogTest {
    private static final long MIB = 1 << 20;

    @Test
    void aHeapNearItsLimitIsReportedUntilItHasRoomAgain() {
        try (StallWatchdog watchdog = new StallWatchdog(60_000, false)) {
            watchdog.checkHeap(new MemoryUsage(0, 500 * MIB, 1000 * MIB, 1000 * MIB));
            assertThat(watchdog.heapHigh()).isFalse();
            assertThat(watchdog.troubled()).isFalse();

            watchdog.checkHeap(new MemoryUsage(0, 950 * MIB, 1000 * MIB, 1000 * MIB));
            assertThat(watchdog.heapHigh()).isTrue();
            assertThat(watchdog.troubled()).isTrue();

            watchdog.checkHeap(new MemoryUsage(0, 300 * MIB, 1000 * MIB, 1000 * MIB));
            assertThat(watchdog.heapHigh()).isFalse();
            assertThat(watchdog.troubled()).isFalse();
        }
    }

    @Test
    void aHeapWithoutALimitIsNeverHigh() {
        try (StallWatchdog watchdog = new StallWatchdog(60_000, false)) {
            watchdog.checkHeap(new MemoryUsage(0, 950 * MIB, 1000 * MIB, -1));
            assertThat(watchdog.heapHigh()).isFalse();
        }
    }
}
