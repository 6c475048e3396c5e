package io.nbdtail.tools.it;

import io.nbdtail.testing.ExternalTool;
import io.nbdtail.testing.RawNbdClient;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * R6, file-descriptor exhaustion: the real server with its descriptor limit lowered ({@code prlimit --pid}) to a
 * few dozen above what it uses, then flooded with connections until accept(2) fails with EMFILE. The connection
 * that was already open keeps reading and writing, the listener does not spin on the failing accept, new clients
 * wait in the backlog instead of being served, and once the flood is gone new clients are served and no
 * descriptor is left behind.
 */
class FdExhaustionIT {
    @TempDir
    Path dir;

    private static int openFds(final long pid) throws IOException {
        try (var s = Files.list(Path.of("/proc", Long.toString(pid), "fd"))) {
            return (int) s.count();
        }
    }

    /** utime + stime of the process, in clock ticks. */
    private static long cpuTicks(final long pid) throws IOException {
        final String stat = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
        final String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        return Long.parseLong(f[11]) + Long.parseLong(f[12]);
    }

    @Test
    void exhaustedDescriptorsRefuseNewClientsButKeepServingTheOpenOnes() throws Exception {
        final Path data = dir.resolve("data");
        ServerProcess.cli("volume", "create", "--data-dir", data.toString(), "--size=16M", "disk").assertSuccess();
        try (ServerProcess server = ServerProcess.start(data, dir.resolve("server.log"))) {
            final long pid = server.pid();
            final RawNbdClient open = new RawNbdClient("127.0.0.1", server.port());
            open.go("disk");
            roundTrip(open, 1);
            final int baseline = openFds(pid);
            final int limit = baseline + 32;
            ExternalTool.run("prlimit", "--pid", Long.toString(pid), "--nofile=" + limit + ":" + limit)
                .assertSuccess();

            final List<Socket> flood = new ArrayList<>();
            try {
                for (int i = 0; i < 100; i++) {
                    flood.add(new Socket("127.0.0.1", server.port()));
                }
                final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
                while (openFds(pid) < limit && System.nanoTime() < deadline) {
                    Thread.sleep(50);
                }
                assertThat(openFds(pid)).as("descriptors in use").isEqualTo(limit);

                final long cpuBefore = cpuTicks(pid);
                Thread.sleep(3_000);
                final long cpu = cpuTicks(pid) - cpuBefore;
                System.out.printf("R6: fd limit %d reached; server CPU over 3 s while exhausted: %d ticks%n", limit,
                    cpu);
                // 300 ticks would be one core spinning the whole time.
                assertThat(cpu).as("CPU ticks in 3 s with accept failing").isLessThan(150);

                for (int i = 2; i < 50; i++) {
                    roundTrip(open, i);
                }
                final ExternalTool.Result refused = ExternalTool.run("timeout", "5", "nbdinfo", server.uri("disk"));
                assertThat(refused.exitCode()).as("a new client while descriptors are exhausted").isNotZero();
            } finally {
                for (final Socket s : flood) {
                    s.close();
                }
            }
            // Recovery: new clients are served again, and nothing leaked.
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            ExternalTool.Result after;
            do {
                after = ExternalTool.run("timeout", "10", "nbdinfo", "--size", server.uri("disk"));
            } while (after.exitCode() != 0 && System.nanoTime() < deadline);
            assertThat(after.assertSuccess().stdout().trim()).isEqualTo(Long.toString(16L << 20));
            roundTrip(open, 99);
            open.close();
            final long settle = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (openFds(pid) > baseline - 1 && System.nanoTime() < settle) {
                Thread.sleep(100);
            }
            assertThat(openFds(pid)).as("descriptors after the flood and the clients are gone")
                .isLessThanOrEqualTo(baseline - 1);
            assertThat(server.logText()).doesNotContain("OutOfMemoryError");
        }
    }

    /** A 4 KiB WRITE then a READ of it on the already open connection. */
    private static void roundTrip(final RawNbdClient c, final int seed) throws IOException {
        final byte[] data = new byte[4096];
        java.util.Arrays.fill(data, (byte) seed);
        c.send(RawNbdClient.request(0, 1, seed, seed * 4096L, 4096));
        c.send(data);
        assertThat(c.simpleReply()).containsExactly(seed, 0);
        c.send(RawNbdClient.request(0, 0, seed + 1000, seed * 4096L, 4096));
        assertThat(c.simpleReply()).containsExactly(seed + 1000, 0);
        final byte[] back = new byte[4096];
        c.readFully(back);
        assertThat(back).isEqualTo(data);
    }
}
