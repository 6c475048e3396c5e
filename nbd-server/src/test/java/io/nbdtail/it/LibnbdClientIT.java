package io.nbdtail.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.nbdtail.nbd.engine.Export;
import io.nbdtail.testing.ExternalTool;
import io.nbdtail.testing.TestServer;
import io.nbdtail.volume.Volume;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HexFormat;
import java.util.Random;

import static org.assertj.core.api.Assertions.assertThat;

/** libnbd's tools ({@code nbdinfo}, {@code nbdcopy}) and {@code fio}'s nbd engine against the server. */
class LibnbdClientIT {
    private static final long SIZE = 64L << 20;
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path dir;
    static TestServer server;

    @BeforeAll
    static void start() throws Exception {
        server = TestServer.start(dir.resolve("data"));
        final Volume info = server.createVolume("info", SIZE, "volume for nbdinfo", false);
        server.createVolume("ro", SIZE, "read-only volume", true);
        server.createVolume("copy", SIZE);
        server.createVolume("fio", SIZE);
        // 1 MiB of data at 2 MiB, the rest never written.
        final ByteBuffer data = ByteBuffer.allocateDirect(1 << 20);
        while (data.hasRemaining()) {
            data.put((byte) 0x5a);
        }
        data.flip();
        info.write(data, 2L << 20);
    }

    @AfterAll
    static void stop() throws Exception {
        server.close();
    }

    @Test
    void shouldDescribeExportInNbdinfoJson() throws Exception {
        final JsonNode json = JSON.readTree(ExternalTool.run("nbdinfo", "--json", server.uri("info")).assertSuccess()
            .stdout());
        assertThat(json.get("protocol").asText()).isEqualTo("newstyle-fixed");
        assertThat(json.get("structured").asBoolean()).isTrue();
        final JsonNode export = json.get("exports").get(0);
        assertThat(export.get("export-name").asText()).isEqualTo("info");
        assertThat(export.get("description").asText()).isEqualTo("volume for nbdinfo");
        assertThat(export.get("export-size").asLong()).isEqualTo(SIZE);
        for (final String flag : new String[] {"can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero",
            "can_cache", "can_multi_conn", "can_df"}) {
            assertThat(export.get(flag).asBoolean()).as(flag).isTrue();
        }
        assertThat(export.get("is_read_only").asBoolean()).isFalse();
        assertThat(export.get("block_size_minimum").asLong()).isEqualTo(1);
        assertThat(export.get("block_size_preferred").asLong()).isEqualTo(4096);
        assertThat(export.get("block_size_maximum").asLong()).isEqualTo(32L << 20);
        assertThat(export.get("contexts").toString()).contains("base:allocation");
    }

    @Test
    void shouldMarkReadOnlyExport() throws Exception {
        final JsonNode export = JSON.readTree(ExternalTool.run("nbdinfo", "--json", server.uri("ro")).assertSuccess()
            .stdout()).get("exports").get(0);
        assertThat(export.get("is_read_only").asBoolean()).isTrue();
        assertThat(export.get("can_trim").asBoolean()).isFalse();
        assertThat(export.get("can_zero").asBoolean()).isFalse();
        assertThat(export.get("can_flush").asBoolean()).isTrue();
    }

    @Test
    void shouldListExportsWithDescriptions() throws Exception {
        final JsonNode json = JSON.readTree(ExternalTool.run("nbdinfo", "--list", "--json",
            "nbd://127.0.0.1:" + server.port()).assertSuccess().stdout());
        final StringBuilder names = new StringBuilder();
        for (final JsonNode e : json.get("exports")) {
            names.append(e.get("export-name").asText()).append(' ');
            if (e.get("export-name").asText().equals("ro")) {
                assertThat(e.get("description").asText()).isEqualTo("read-only volume");
            }
        }
        assertThat(names.toString()).contains("info ").contains("ro ").contains("copy ").contains("fio ");
    }

    @Test
    void shouldMapAllocationExactly() throws Exception {
        final JsonNode map = JSON.readTree(ExternalTool.run("nbdinfo", "--map", "--json", server.uri("info"))
            .assertSuccess().stdout());
        assertThat(map.size()).isEqualTo(3);
        assertExtent(map.get(0), 0, 2L << 20, 3);
        assertExtent(map.get(1), 2L << 20, 1L << 20, 0);
        assertExtent(map.get(2), 3L << 20, SIZE - (3L << 20), 3);
    }

    private static void assertExtent(final JsonNode e, final long offset, final long length, final int type) {
        assertThat(e.get("offset").asLong()).isEqualTo(offset);
        assertThat(e.get("length").asLong()).isEqualTo(length);
        assertThat(e.get("type").asInt()).isEqualTo(type);
    }

    @Test
    void shouldRoundTripThroughNbdcopyOverFourConnections() throws Exception {
        final Path source = dir.resolve("copy-source.img");
        final Random random = new Random(7);
        final byte[] chunk = new byte[1 << 20];
        try (RandomAccessFile f = new RandomAccessFile(source.toFile(), "rw")) {
            f.setLength(SIZE);
            for (long at = 0; at < SIZE; at += 4L << 20) {
                random.nextBytes(chunk);
                f.seek(at);
                f.write(chunk);
            }
        }
        final Export export = server.export("copy");
        final long before = export.stats().connectionsOpened();
        ExternalTool.run("nbdcopy", "--connections=4", "--threads=4", "--flush", source.toString(), server.uri("copy"))
            .assertSuccess();
        assertThat(export.stats().connectionsOpened() - before).as("multi-conn connections").isGreaterThanOrEqualTo(4);
        final Path back = dir.resolve("copy-back.img");
        ExternalTool.run("nbdcopy", "--connections=4", server.uri("copy"), back.toString()).assertSuccess();
        assertThat(sha256(back)).isEqualTo(sha256(source));
        assertThat(sha256(server.dataFile("copy"))).isEqualTo(sha256(source));
    }

    @Test
    void shouldPassFioVerifyAtQueueDepth32() {
        final ExternalTool.Result result = ExternalTool.run("fio", "--name=verify", "--ioengine=nbd",
            "--uri=" + server.uri("fio"), "--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=" + (32 << 20),
            "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--randrepeat=1",
            "--output-format=normal").assertSuccess();
        assertThat(result.output()).doesNotContain("verify: bad").doesNotContainPattern("err=\\s*[1-9]");
        assertThat(result.stdout()).contains("write: IOPS=").contains("read: IOPS=");
    }

    static String sha256(final Path file) throws Exception {
        final MessageDigest md = MessageDigest.getInstance("SHA-256");
        try (var in = Files.newInputStream(file)) {
            final byte[] buf = new byte[1 << 20];
            int n;
            while ((n = in.read(buf)) > 0) {
                md.update(buf, 0, n);
            }
        }
        return HexFormat.of().formatHex(md.digest());
    }
}
