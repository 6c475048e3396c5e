package io.nbdtail.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.nbdtail.testing.ExternalTool;
import io.nbdtail.testing.TestServer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * qemu's own NBD client ({@code qemu-img}, {@code qemu-io}) against the server. Every test checks bytes: what
 * the client reads, and what landed in the volume's backing file.
 */
class QemuClientIT {
    private static final long SIZE = 64L << 20;
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path dir;
    static TestServer server;

    @BeforeAll
    static void start() throws Exception {
        server = TestServer.start(dir.resolve("data"));
        server.createVolume("io", SIZE);
        server.createVolume("aio", SIZE);
        server.createVolume("convert", SIZE);
        server.createVolume("empty", SIZE);
        server.createVolume("zeroes", SIZE);
    }

    @AfterAll
    static void stop() throws Exception {
        server.close();
    }

    @Test
    void shouldReportSizeToQemuImgInfo() throws Exception {
        final JsonNode info = JSON.readTree(ExternalTool.run("qemu-img", "info", "--output=json",
            server.uri("empty")).assertSuccess().stdout());
        assertThat(info.get("virtual-size").asLong()).isEqualTo(SIZE);
    }

    @Test
    void shouldRoundTripRandomSparseImageThroughQemuImgConvertAndKeepHoles() throws Exception {
        // 64 MiB source: random data in a few extents, holes elsewhere.
        final Path source = dir.resolve("source.img");
        final Random random = new Random(42);
        try (RandomAccessFile f = new RandomAccessFile(source.toFile(), "rw")) {
            f.setLength(SIZE);
            for (final long[] extent : new long[][] {{0, 1 << 20}, {5L << 20, 3 << 20}, {33L << 20, 65536},
                {(63L << 20) + 4096, 12288}}) {
                final byte[] data = new byte[(int) extent[1]];
                random.nextBytes(data);
                f.seek(extent[0]);
                f.write(data);
            }
        }
        ExternalTool.run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", source.toString(),
            server.uri("convert")).assertSuccess();
        ExternalTool.run("qemu-img", "compare", "-f", "raw", "-F", "raw", source.toString(), server.uri("convert"))
            .assertSuccess();

        final Path back = dir.resolve("back.img");
        ExternalTool.run("qemu-img", "convert", "-f", "raw", "-O", "raw", server.uri("convert"), back.toString())
            .assertSuccess();
        assertThat(Files.mismatch(source, back)).isEqualTo(-1L);
        assertThat(Files.mismatch(source, server.dataFile("convert"))).isEqualTo(-1L);

        // Sparse stays sparse: the server's file and the copy back hold about 4.1 MiB of data, not 64 MiB.
        final long dataBytes = (1 << 20) + (3 << 20) + 65536 + 12288;
        assertThat(allocatedBytes(server.dataFile("convert"))).isLessThan(dataBytes + (2 << 20));
        assertThat(allocatedBytes(back)).isLessThan(dataBytes + (2 << 20));

        // qemu-img map sees the holes through base:allocation.
        final JsonNode map = JSON.readTree(ExternalTool.run("qemu-img", "map", "--output=json",
            server.uri("convert")).assertSuccess().stdout());
        long dataLength = 0;
        for (final JsonNode e : map) {
            if (e.get("data").asBoolean()) {
                dataLength += e.get("length").asLong();
            } else {
                assertThat(e.get("zero").asBoolean()).isTrue();
            }
        }
        assertThat(dataLength).isBetween(dataBytes, dataBytes + (1 << 20));
        assertThat(map.get(0).get("start").asLong()).isZero();
        assertThat(map.get(0).get("data").asBoolean()).isTrue();
        assertThat(map.get(0).get("length").asLong()).isEqualTo(1 << 20);
    }

    @Test
    void shouldReadBackQemuIoPatternsAtManySizesAndOffsets() throws Exception {
        final List<String> commands = new ArrayList<>();
        final byte[] model = new byte[(int) SIZE];
        int pattern = 1;
        final long[] offsets = {0, 1, 511, 512, 4095, 4096, 65535, 65536 - 100, (1 << 20) - 7, (7L << 20) + 3,
            SIZE - 4096, SIZE - 1};
        final int[] sizes = {1, 7, 512, 4096, 4097, 65536, 65536 + 513, 1 << 20, (2 << 20) + 5};
        for (final long offset : offsets) {
            for (final int size : sizes) {
                if (offset + size > SIZE) {
                    continue;
                }
                final int p = pattern++ & 0xff;
                commands.add("write -P " + p + " " + offset + " " + size);
                commands.add("read -P " + p + " " + offset + " " + size);
                for (int i = 0; i < size; i++) {
                    model[(int) (offset + i)] = (byte) p;
                }
            }
        }
        commands.add("flush");
        runQemuIo("io", commands);
        final Path expected = dir.resolve("model.bin");
        Files.write(expected, model);
        assertThat(Files.mismatch(expected, server.dataFile("io"))).isEqualTo(-1L);
    }

    @Test
    void shouldZeroAndDiscardAndFlushWithQemuIo() throws Exception {
        runQemuIo("zeroes", List.of(
            "write -P 0xaa 0 4M",
            "write -z 65536 65536",          // WRITE_ZEROES, hole allowed
            "read -P 0 65536 65536",
            "read -P 0xaa 0 65536",
            "read -P 0xaa 131072 65536",
            "write -z -u 1M 1M",             // unmap allowed
            "read -P 0 1M 1M",
            "discard 2M 1M",
            "read -P 0 2M 1M",
            "read -P 0xaa 3M 1M",
            "flush"));
        final byte[] file = Files.readAllBytes(server.dataFile("zeroes"));
        assertThat(file[0]).isEqualTo((byte) 0xaa);
        assertThat(file[65536]).isZero();
        assertThat(file[(2 << 20) + 5]).isZero();
        assertThat(file[(3 << 20) + 5]).isEqualTo((byte) 0xaa);
    }

    @Test
    void shouldServeConcurrentAioWritesFromQemuIo() throws Exception {
        final List<String> commands = new ArrayList<>();
        for (int i = 0; i < 32; i++) {
            commands.add("aio_write -P " + (i + 1) + " " + ((8L << 20) + i * 131072L) + " 131072");
        }
        commands.add("aio_flush");
        for (int i = 0; i < 32; i++) {
            commands.add("read -P " + (i + 1) + " " + ((8L << 20) + i * 131072L) + " 131072");
        }
        runQemuIo("aio", commands);
    }

    private static void runQemuIo(final String export, final List<String> commands) {
        final List<String> args = ExternalTool.args("qemu-io", "-f", "raw");
        for (final String c : commands) {
            args.add("-c");
            args.add(c);
        }
        args.add(server.uri(export));
        final ExternalTool.Result result = ExternalTool.run(args).assertSuccess();
        assertThat(result.output()).doesNotContain("Pattern verification failed").doesNotContain("error");
    }

    static long allocatedBytes(final Path file) {
        final String out = ExternalTool.run("stat", "-c", "%b %B", file.toString()).assertSuccess().stdout().trim();
        final String[] parts = out.split(" ");
        return Long.parseLong(parts[0]) * Long.parseLong(parts[1]);
    }
}
