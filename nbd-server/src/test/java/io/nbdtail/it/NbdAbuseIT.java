package io.nbdtail.it;

import io.nbdtail.nbd.engine.NbdServerConfig;
import io.nbdtail.testing.ExternalTool;
import io.nbdtail.testing.RawNbdClient;
import io.nbdtail.testing.TestServer;
import io.netty.buffer.PooledByteBufAllocator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.BitSet;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static io.nbdtail.nbd.protocol.NbdConstants.*;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * Abusive clients (reliability.md §6.5 R1-R3) while a well-behaved client on another connection must keep full
 * service: qemu-io writes and reads back a pattern during each abuse, within the suite's normal command timeout.
 * Each test runs its own server with the limits it exercises, and prints what it measured.
 */
class NbdAbuseIT {
    private static final Path SCRIPTS = Path.of("src", "test", "python");
    private static final long SIZE = 64L << 20;

    @TempDir
    Path dir;

    private static NbdServerConfig config() {
        final NbdServerConfig config = new NbdServerConfig();
        config.eventLoopThreads = 2;
        config.storageThreads = 4;
        return config;
    }

    /** The well-behaved client: qemu-io writes 1 MiB at {@code offset} and reads it back. */
    private static long wellBehaved(final TestServer server, final long offset) {
        final long start = System.nanoTime();
        final String pattern = "0x" + Integer.toHexString(0x10 + (int) (offset >>> 20) % 0xe0);
        final String out = ExternalTool.run(ExternalTool.args("qemu-io", "-f", "raw", "-c", "write -P " + pattern + " "
            + offset + " 1M", "-c", "read -P " + pattern + " " + offset + " 1M", server.uri("disk")))
            .assertSuccess().output();
        assertThat(out).doesNotContain("Pattern verification failed");
        return TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
    }

    private static long heapUsedAfterGc() {
        final Runtime rt = Runtime.getRuntime();
        System.gc();
        return rt.totalMemory() - rt.freeMemory();
    }

    private static long directUsed() {
        return PooledByteBufAllocator.DEFAULT.metric().usedDirectMemory();
    }

    private static void await(final String what, final long millis, final java.util.function.BooleanSupplier done)
        throws InterruptedException {
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(millis);
        while (!done.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out after " + millis + " ms waiting for " + what);
            }
            Thread.sleep(50);
        }
    }

    /**
     * R1: 10,000 connections that never send a byte, from 127.0.0.2 (a separate process holds them, so this JVM
     * needs only its own 10,000 descriptors; the hard limit here is 20,000). Caps are raised so all 10,000 really
     * are held at once: the test is about what they cost and that the handshake timeout reaps them.
     */
    @Test
    void tenThousandIdleHandshakesCostLittleAndAreClosedAfterTheTimeout() throws Exception {
        final NbdServerConfig config = config();
        config.maxConnections = 12_000;
        config.maxConnectionsPerAddress = 11_000;
        config.handshakeTimeoutMillis = 20_000;
        try (TestServer server = TestServer.start(dir.resolve("r1"), config)) {
            server.createVolume("disk", SIZE);
            wellBehaved(server, 0); // warm up, so the measurement below is not class loading
            final long heapBefore = heapUsedAfterGc();
            final long directBefore = directUsed();
            final Process holder = new ProcessBuilder(ExternalTool.PYTHON,
                SCRIPTS.resolve("hold_connections.py").toString(), "--host", "127.0.0.1", "--port",
                Integer.toString(server.port()), "--source", "127.0.0.2", "--count", "10000", "--wait", "60")
                .redirectErrorStream(true).start();
            try (BufferedReader out = new BufferedReader(new InputStreamReader(holder.getInputStream(),
                StandardCharsets.UTF_8))) {
                assertThat(out.readLine()).isEqualTo("connected 10000");
                try {
                    await("10,000 connections accepted", 30_000, () -> server.server().connectionCount() >= 10_000);
                } catch (final AssertionError e) {
                    throw new AssertionError(e.getMessage() + "; connections=" + server.server().connectionCount()
                        + " refused=" + server.server().refusedConnections(), e);
                }
                final long heapHeld = heapUsedAfterGc() - heapBefore;
                final long directHeld = directUsed() - directBefore;
                final long millis = wellBehaved(server, 1 << 20);
                System.out.printf("R1: 10000 idle handshakes: heap +%d KiB (%d bytes each), direct +%d KiB;"
                    + " well-behaved qemu-io took %d ms%n", heapHeld >> 10, heapHeld / 10_000, directHeld >> 10,
                    millis);
                assertThat(heapHeld).as("heap held by 10,000 idle handshakes").isLessThan(200L << 20);
                assertThat(directHeld).as("direct memory held by 10,000 idle handshakes").isLessThan(32L << 20);
                // The handshake timeout closes every one of them.
                assertThat(out.readLine()).isEqualTo("greeted 10000");
                assertThat(out.readLine()).isEqualTo("closed 10000");
            } finally {
                holder.destroyForcibly().waitFor();
            }
            await("all idle connections gone", 10_000, () -> server.server().connectionCount() == 0);
            wellBehaved(server, 2 << 20);
        }
    }

    /** R1 with the default caps: one address gets 128 connections, the rest are closed at once; others are served. */
    @Test
    void theDefaultCapsRefuseAFloodFromOneAddressAndServeTheOthers() throws Exception {
        try (TestServer server = TestServer.start(dir.resolve("caps"), config())) {
            server.createVolume("disk", SIZE);
            final Process holder = new ProcessBuilder(ExternalTool.PYTHON,
                SCRIPTS.resolve("hold_connections.py").toString(), "--host", "127.0.0.1", "--port",
                Integer.toString(server.port()), "--source", "127.0.0.3", "--count", "2000", "--wait", "15")
                .redirectErrorStream(true).start();
            try (BufferedReader out = new BufferedReader(new InputStreamReader(holder.getInputStream(),
                StandardCharsets.UTF_8))) {
                assertThat(out.readLine()).isEqualTo("connected 2000");
                await("the flood refused", 30_000, () -> server.server().refusedConnections() >= 2000 - 128);
                assertThat(server.server().connectionCount()).isLessThanOrEqualTo(128);
                wellBehaved(server, 0);
            } finally {
                holder.destroyForcibly().waitFor();
            }
        }
    }

    /** R2: a handshake at one byte per second is closed by the handshake timeout. */
    @Test
    void aSlowLorisHandshakeIsClosedByTheHandshakeTimeout() throws Exception {
        final NbdServerConfig config = config();
        config.handshakeTimeoutMillis = 3_000;
        try (TestServer server = TestServer.start(dir.resolve("r2h"), config);
             Socket s = new Socket("127.0.0.1", server.port())) {
            server.createVolume("disk", SIZE);
            s.getInputStream().readNBytes(18); // greeting
            final byte[] handshake = ByteBuffer.allocate(4 + 16).putInt(CLIENT_FLAG_FIXED_NEWSTYLE)
                .putLong(IHAVEOPT).putInt(OPT_LIST).putInt(0).array();
            final long start = System.nanoTime();
            final Thread trickle = trickle(s.getOutputStream(), handshake, 1000);
            wellBehaved(server, 0);
            s.setSoTimeout(10_000);
            assertThat(s.getInputStream().read()).as("EOF from the server").isEqualTo(-1);
            final long millis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
            System.out.printf("R2: slow handshake closed after %d ms%n", millis);
            assertThat(millis).isBetween(2_000L, 6_000L);
            trickle.interrupt();
        }
    }

    /**
     * R2 in transmission: a WRITE whose payload trickles in at one byte per second is closed after
     * requestTimeoutMillis, while a connection that is merely idle stays open and usable.
     */
    @Test
    void aSlowLorisRequestIsClosedButAnIdleConnectionIsNot() throws Exception {
        final NbdServerConfig config = config();
        config.requestTimeoutMillis = 2_000;
        try (TestServer server = TestServer.start(dir.resolve("r2t"), config);
             RawNbdClient slow = new RawNbdClient("127.0.0.1", server.port());
             RawNbdClient idle = new RawNbdClient("127.0.0.1", server.port())) {
            server.createVolume("disk", SIZE);
            slow.go("disk");
            idle.go("disk");
            slow.send(RawNbdClient.request(0, 1, 7, 0, 4096)); // WRITE of 4 KiB; the payload follows slowly
            final long start = System.nanoTime();
            final Thread trickle = trickle(slow.outputStream(), new byte[4096], 1000);
            wellBehaved(server, 0);
            slow.timeout(15_000);
            assertThat(slow.closedByServer()).isTrue();
            final long millis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
            System.out.printf("R2: slow WRITE payload closed after %d ms%n", millis);
            assertThat(millis).isBetween(2_000L, 8_000L);
            trickle.interrupt();
            // Idle for longer than the request timeout, yet served.
            idle.send(RawNbdClient.request(0, 0, 9, 0, 512));
            final long[] reply = idle.simpleReply();
            assertThat(reply).containsExactly(9, 0);
            idle.readFully(new byte[512]);
        }
    }

    /** idleTimeoutMillis, when set, closes a connection with no requests. */
    @Test
    void anIdleTimeoutWhenConfiguredClosesIdleConnections() throws Exception {
        final NbdServerConfig config = config();
        config.idleTimeoutMillis = 2_000;
        try (TestServer server = TestServer.start(dir.resolve("idle"), config);
             RawNbdClient idle = new RawNbdClient("127.0.0.1", server.port())) {
            server.createVolume("disk", SIZE);
            idle.go("disk");
            idle.timeout(15_000);
            final long start = System.nanoTime();
            assertThat(idle.closedByServer()).isTrue();
            assertThat(TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start)).isBetween(1_500L, 8_000L);
        }
    }

    /**
     * R3: 100,000 READs pipelined without reading a reply. The server stops reading (its outbound buffer is
     * full), holds bounded memory, serves another client meanwhile, and once the client reads, every cookie is
     * answered exactly once with the right data length.
     */
    @Test
    void aClientPipeliningAHundredThousandRequestsWithoutReadingIsHeldBackNotServedInfinitely() throws Exception {
        final int count = 100_000;
        try (TestServer server = TestServer.start(dir.resolve("r3"), config());
             RawNbdClient flood = new RawNbdClient("127.0.0.1", server.port())) {
            server.createVolume("disk", SIZE);
            flood.go("disk");
            final long directBefore = directUsed();
            final AtomicInteger sent = new AtomicInteger();
            final Thread writer = new Thread(() -> {
                try {
                    for (int i = 0; i < count; i++) {
                        flood.outputStream().write(RawNbdClient.request(0, 0, i, (i * 4096L) % SIZE, 4096));
                        sent.incrementAndGet();
                    }
                    flood.outputStream().flush();
                } catch (final IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            });
            writer.start();
            Thread.sleep(3_000);
            final long directHeld = directUsed() - directBefore;
            final int sentBeforeReading = sent.get();
            final long millis = wellBehaved(server, 4 << 20);
            System.out.printf("R3: after 3 s the client had written %d of %d requests; direct memory +%d KiB;"
                + " well-behaved qemu-io took %d ms%n", sentBeforeReading, count, directHeld >> 10, millis);
            // The requests not yet read wait in the kernel's socket buffers, not in this server.
            assertThat(server.export("disk").inFlightRequests()).as("requests held for the flood")
                .isLessThanOrEqualTo(128);
            assertThat(directHeld).as("direct memory held for the flood").isLessThan(64L << 20);

            final BitSet seen = new BitSet(count);
            final byte[] data = new byte[4096];
            flood.timeout(60_000);
            for (int i = 0; i < count; i++) {
                final long[] reply = flood.simpleReply();
                assertThat(reply[1]).isZero();
                assertThat(seen.get((int) reply[0])).as("cookie %d answered twice", reply[0]).isFalse();
                seen.set((int) reply[0]);
                flood.readFully(data);
            }
            assertThat(seen.cardinality()).isEqualTo(count);
            writer.join(10_000);
        }
    }

    /**
     * Per-volume caps: four connections each pipelining 2,000 READs never have more than
     * maxInFlightRequestsPerVolume (plus one per connection) in flight on the volume together.
     */
    @Test
    void manyConnectionsToOneVolumeShareItsInFlightCap() throws Exception {
        final NbdServerConfig config = config();
        config.maxInFlightRequests = 64;
        config.maxInFlightRequestsPerVolume = 64;
        final int connections = 4;
        final int perConnection = 2_000;
        try (TestServer server = TestServer.start(dir.resolve("volcap"), config)) {
            server.createVolume("disk", SIZE);
            final AtomicInteger max = new AtomicInteger();
            final Thread sampler = new Thread(() -> {
                while (!Thread.currentThread().isInterrupted()) {
                    max.accumulateAndGet(server.export("disk").inFlightRequests(), Math::max);
                    Thread.onSpinWait();
                }
            });
            sampler.start();
            final Thread[] clients = new Thread[connections];
            final AtomicInteger answered = new AtomicInteger();
            for (int c = 0; c < connections; c++) {
                clients[c] = new Thread(() -> {
                    try (RawNbdClient client = new RawNbdClient("127.0.0.1", server.port())) {
                        client.go("disk");
                        final Thread w = new Thread(() -> {
                            try {
                                for (int i = 0; i < perConnection; i++) {
                                    client.outputStream().write(RawNbdClient.request(0, 0, i, i * 512L, 512));
                                }
                                client.outputStream().flush();
                            } catch (final IOException e) {
                                throw new java.io.UncheckedIOException(e);
                            }
                        });
                        w.start();
                        final byte[] data = new byte[512];
                        for (int i = 0; i < perConnection; i++) {
                            assertThat(client.simpleReply()[1]).isZero();
                            client.readFully(data);
                            answered.incrementAndGet();
                        }
                        w.join();
                    } catch (final Exception e) {
                        throw new AssertionError(e);
                    }
                });
                clients[c].start();
            }
            wellBehaved(server, 8 << 20);
            for (final Thread t : clients) {
                t.join(60_000);
            }
            sampler.interrupt();
            sampler.join();
            System.out.printf("per-volume cap 64: at most %d requests were in flight on the volume%n", max.get());
            assertThat(answered.get()).isEqualTo(connections * perConnection);
            assertThat(max.get()).isLessThanOrEqualTo(64 + connections + 1); // + the well-behaved client
        }
    }

    /** Writes {@code bytes} one at a time, {@code periodMillis} apart, until done, interrupted or refused. */
    private static Thread trickle(final OutputStream out, final byte[] bytes, final long periodMillis) {
        final Thread t = new Thread(() -> {
            try {
                for (final byte b : bytes) {
                    out.write(b);
                    out.flush();
                    Thread.sleep(periodMillis);
                }
            } catch (final IOException | InterruptedException e) {
                // The server closed the connection, or the test is over.
            }
        });
        t.setDaemon(true);
        t.start();
        return t;
    }
}
