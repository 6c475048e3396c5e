package io.nbdtail.it;

import io.nbdtail.nbd.client.NbdClient;
import io.nbdtail.nbd.client.NbdClientException;
import io.nbdtail.testing.ExternalTool;
import io.nbdtail.testing.TestServer;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.EventLoopGroup;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The mirror's NBD client against our server, nbdkit's memory plugin and qemu-nbd. */
class NbdClientIT {
    static final long SIZE = 16L << 20;

    @TempDir
    static Path dir;
    static TestServer server;
    static EventLoopGroup group;

    @BeforeAll
    static void start() throws Exception {
        server = TestServer.start(dir.resolve("data"));
        server.createVolume("v", SIZE);
        server.createVolume("ro", SIZE, "", true);
        group = NbdClient.newGroup(1);
    }

    @AfterAll
    static void stop() throws Exception {
        server.close();
        group.shutdownGracefully(0, 1, TimeUnit.SECONDS).sync();
    }

    private static NbdClient connect(final int port, final String export) throws Exception {
        final NbdClient.Options options = new NbdClient.Options();
        options.exportName = export;
        return NbdClient.connect(group, new InetSocketAddress("127.0.0.1", port), options);
    }

    @Test
    void shouldWriteAndReadBackManyRequestsInFlightAgainstOurServer() throws Exception {
        try (NbdClient client = connect(server.port(), "v")) {
            assertThat(client.size()).isEqualTo(SIZE);
            assertThat(client.structuredReplies()).isTrue();
            exercise(client);
        }
    }

    @Test
    void shouldReportTheServersErrorAndKeepTheConnection() throws Exception {
        try (NbdClient client = connect(server.port(), "ro")) {
            assertThatThrownBy(() -> client.write(0, Unpooled.wrappedBuffer(new byte[512]), false).get())
                .hasCauseInstanceOf(NbdClientException.class)
                .satisfies(e -> assertThat(((NbdClientException) e.getCause()).errno()).isEqualTo(1));
            final ByteBuf data = client.read(0, 4096).get();
            data.release();
            assertThat(client.isOpen()).isTrue();
        }
    }

    @Test
    void shouldRefuseAnUnknownExportAtTheHandshake() {
        assertThatThrownBy(() -> connect(server.port(), "nope"))
            .isInstanceOf(NbdClientException.class)
            .satisfies(e -> assertThat(((NbdClientException) e).answered()).isTrue());
    }

    @Test
    void shouldFailAtOnceWhenNothingListens() throws Exception {
        final int port;
        try (ServerSocket socket = new ServerSocket(0)) {
            port = socket.getLocalPort();
        }
        assertThatThrownBy(() -> connect(port, "v"))
            .isInstanceOf(NbdClientException.class)
            .satisfies(e -> assertThat(((NbdClientException) e).answered()).isFalse());
    }

    @Test
    void shouldWorkAgainstNbdkitMemory() throws Exception {
        ExternalTool.requireTool("nbdkit");
        try (External nbdkit = External.start("nbdkit", "--foreground", "--exit-with-parent", "-i", "127.0.0.1",
            "-p", "%PORT%", "memory", String.valueOf(SIZE))) {
            try (NbdClient client = connect(nbdkit.port, "")) {
                exercise(client);
            }
        }
    }

    @Test
    void shouldWorkAgainstQemuNbd() throws Exception {
        ExternalTool.requireTool("qemu-nbd");
        final Path image = dir.resolve("qemu.raw");
        try (var file = new java.io.RandomAccessFile(image.toFile(), "rw")) {
            file.setLength(SIZE);
        }
        try (External qemu = External.start("qemu-nbd", "-f", "raw", "-b", "127.0.0.1", "-p", "%PORT%", "-x", "q",
            "-t", "--discard=unmap", image.toString())) {
            try (NbdClient client = connect(qemu.port, "q")) {
                exercise(client);
            }
        }
    }

    /** Random writes with 64 in flight, zeroes, trims and a flush, then everything read back and compared. */
    static void exercise(final NbdClient client) throws Exception {
        final byte[] model = new byte[(int) SIZE];
        final Random random = new Random(42);
        final List<CompletableFuture<Void>> writes = new ArrayList<>();
        // In-flight writes may complete in any order, so no two overlap: each goes to its own 64 KiB slot.
        final List<Integer> slots = new ArrayList<>();
        for (int i = 0; i < SIZE / 65536; i++) {
            slots.add(i);
        }
        java.util.Collections.shuffle(slots, random);
        for (final int slot : slots) {
            final int length = 512 * (1 + random.nextInt(128));
            final int offset = slot * 65536 + 512 * random.nextInt((65536 - length) / 512 + 1);
            final byte[] data = new byte[length];
            random.nextBytes(data);
            System.arraycopy(data, 0, model, offset, length);
            writes.add(client.write(offset, Unpooled.wrappedBuffer(data), false));
            if (writes.size() >= 64) {
                writes.removeFirst().get();
            }
        }
        for (final CompletableFuture<Void> w : writes) {
            w.get();
        }
        client.writeZeroes(1 << 20, 1 << 20, false).get();
        java.util.Arrays.fill(model, 1 << 20, 2 << 20, (byte) 0);
        client.writeZeroes(5 << 20, 65536, true).get();
        java.util.Arrays.fill(model, 5 << 20, (5 << 20) + 65536, (byte) 0);
        client.flush().get();
        final List<CompletableFuture<ByteBuf>> reads = new ArrayList<>();
        final int chunk = 1 << 20;
        for (int offset = 0; offset < SIZE; offset += chunk) {
            reads.add(client.read(offset, chunk));
        }
        final List<byte[]> got = new ArrayList<>();
        for (final CompletableFuture<ByteBuf> read : reads) {
            final ByteBuf data = read.get();
            final byte[] bytes = new byte[chunk];
            data.getBytes(data.readerIndex(), bytes);
            data.release();
            got.add(bytes);
        }
        for (int i = 0; i < got.size(); i++) {
            assertThat(java.util.Arrays.equals(got.get(i), java.util.Arrays.copyOfRange(model, i * chunk,
                (i + 1) * chunk))).as("MiB %d equals the model", i).isTrue();
        }
    }

    /** An external NBD server on a free port, killed at the end. */
    static final class External implements AutoCloseable {
        final Process process;
        final int port;

        private External(final Process process, final int port) {
            this.process = process;
            this.port = port;
        }

        static External start(final String... command) throws IOException, InterruptedException {
            final int port;
            try (ServerSocket socket = new ServerSocket(0)) {
                port = socket.getLocalPort();
            }
            final List<String> args = new ArrayList<>();
            for (final String c : command) {
                args.add(c.replace("%PORT%", String.valueOf(port)));
            }
            final Process process = new ProcessBuilder(args).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (System.nanoTime() < deadline) {
                try (java.net.Socket s = new java.net.Socket("127.0.0.1", port)) {
                    return new External(process, port);
                } catch (final IOException e) {
                    if (!process.isAlive()) {
                        throw new IOException(args + " exited with " + process.exitValue());
                    }
                    Thread.sleep(50);
                }
            }
            process.destroyForcibly();
            throw new IOException(args + " did not listen within 10 s");
        }

        @Override
        public void close() throws Exception {
            process.destroy();
            if (!process.waitFor(5, TimeUnit.SECONDS)) {
                process.destroyForcibly();
            }
        }
    }

}
