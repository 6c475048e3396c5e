package io.nbdtail.it;

import io.nbdtail.testing.ExternalTool;
import io.nbdtail.testing.RawNbdClient;
import io.nbdtail.testing.TestServer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.RandomAccessFile;
import java.net.Socket;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Reliability.md P9 and P10 over real sockets: a client that goes away in the middle of a WRITE payload or
 * resets the connection with replies still owed, and a client that reuses one cookie for many requests. The
 * server must not apply a partial write, must clean up (no connection, request or buffer left; the suite's leak
 * check fails the class otherwise) and must keep serving everyone else.
 */
class DisconnectingClientIT {
    private static final long SIZE = 64L << 20;

    @TempDir
    static Path dir;
    static TestServer server;

    @BeforeAll
    static void start() throws Exception {
        server = TestServer.start(dir.resolve("data"));
        server.createVolume("disk", SIZE);
    }

    @AfterAll
    static void stop() throws Exception {
        server.close();
    }

    private static void awaitIdle() throws InterruptedException {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while ((server.server().connectionCount() != 0 || server.export("disk").inFlightRequests() != 0)
            && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertThat(server.server().connectionCount()).as("connections left").isZero();
        assertThat(server.export("disk").inFlightRequests()).as("requests left in flight").isZero();
    }

    @Test
    void aWriteCutOffInItsPayloadIsNeverApplied() throws Exception {
        final long offset = 8L << 20;
        try (RawNbdClient c = new RawNbdClient("127.0.0.1", server.port())) {
            c.go("disk");
            final byte[] payload = new byte[65536];
            Arrays.fill(payload, (byte) 0x5a);
            c.send(RawNbdClient.request(0, 1, 1, offset, payload.length));
            c.send(Arrays.copyOf(payload, payload.length / 2));
        }
        awaitIdle();
        try (RandomAccessFile f = new RandomAccessFile(server.dataFile("disk").toFile(), "r")) {
            final byte[] back = new byte[65536];
            f.seek(offset);
            f.readFully(back);
            assertThat(back).as("the half-sent WRITE").containsOnly(0);
        }
        ExternalTool.run("nbdinfo", "--size", server.uri("disk")).assertSuccess();
    }

    @Test
    void aResetWithRepliesOwedIsCleanedUp() throws Exception {
        final RawNbdClient c = new RawNbdClient("127.0.0.1", server.port());
        c.go("disk");
        for (int i = 0; i < 200; i++) {
            c.outputStream().write(RawNbdClient.request(0, 0, i, (long) i << 20, 1 << 20));
        }
        c.outputStream().flush();
        c.resetNow();
        awaitIdle();
        ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x21 0 1M", "-c", "read -P 0x21 0 1M",
            server.uri("disk")).assertSuccess();
    }

    @Test
    void aCookieUsedForManyRequestsGetsOneReplyPerRequest() throws Exception {
        try (RawNbdClient c = new RawNbdClient("127.0.0.1", server.port())) {
            c.go("disk");
            for (int i = 0; i < 50; i++) {
                c.outputStream().write(RawNbdClient.request(0, 0, 0x4242, (long) i * 4096, 4096));
            }
            c.outputStream().flush();
            final byte[] data = new byte[4096];
            for (int i = 0; i < 50; i++) {
                assertThat(c.simpleReply()).containsExactly(0x4242, 0);
                c.readFully(data);
            }
            // Nothing more: the next reply is for the next request.
            c.send(RawNbdClient.request(0, 3, 77, 0, 0));
            assertThat(c.simpleReply()).containsExactly(77, 0);
        }
    }

    @Test
    void aClientThatStopsMidHeaderIsForgotten() throws Exception {
        try (Socket s = new Socket("127.0.0.1", server.port())) {
            s.getInputStream().readNBytes(18);
            s.getOutputStream().write(new byte[] {0, 0, 0, 3, 0x49, 0x48});
        }
        awaitIdle();
    }
}
