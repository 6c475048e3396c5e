package io.nbdtail.tools.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.nbdtail.testing.ExternalTool;
import io.nbdtail.testing.TestPki;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Live mirroring between two real server processes on this machine: qemu writing through the volume's own
 * address across the cutover, and SIGKILL-equivalent crashes (fault hooks that halt the JVM) at every cutover
 * step of the source and of the destination.
 */
class MirrorProcessIT {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String TOKEN = "mirror-test-token-0123456789";
    private static final long SIZE = 32L << 20;

    @TempDir
    Path dir;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

    private record Answer(int status, JsonNode body) {
    }

    /** Calls the API, waiting up to 10 s for it to come up (it starts just after the NBD listener). */
    private Answer api(final ServerProcess server, final Path dataDir, final String method, final String path,
                       final Object body) throws Exception {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (true) {
            try {
                return call(server, dataDir, method, path, body);
            } catch (final java.net.ConnectException | java.nio.file.NoSuchFileException e) {
                if (System.nanoTime() > deadline) {
                    throw e;
                }
                Thread.sleep(100);
            }
        }
    }

    private Answer call(final ServerProcess server, final Path dataDir, final String method, final String path,
                        final Object body) throws Exception {
        final String token = Files.readString(dataDir.resolve("api-token")).trim();
        final HttpRequest request = HttpRequest.newBuilder(URI.create(server.apiUrl() + path))
            .timeout(Duration.ofSeconds(60))
            .header("Authorization", "Bearer " + token)
            .method(method, body == null ? HttpRequest.BodyPublishers.noBody()
                : HttpRequest.BodyPublishers.ofString(JSON.writeValueAsString(body)))
            .build();
        final HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
        return new Answer(response.statusCode(), response.body().isEmpty() ? JSON.createObjectNode()
            : JSON.readTree(response.body()));
    }

    private static ObjectNode json(final Object... keyValues) {
        final ObjectNode node = JSON.createObjectNode();
        for (int i = 0; i < keyValues.length; i += 2) {
            node.putPOJO((String) keyValues[i], keyValues[i + 1]);
        }
        return node;
    }

    private static int freePort(final String host) throws Exception {
        try (ServerSocket socket = new ServerSocket(0, 1, InetAddress.getByName(host))) {
            return socket.getLocalPort();
        }
    }

    private static byte[] dataFile(final Path dataDir, final String name) throws Exception {
        return Files.readAllBytes(dataDir.resolve("volumes").resolve(name).resolve("data.raw"));
    }

    private JsonNode awaitMirror(final ServerProcess source, final Path dataDir, final String name,
                                 final String... states) throws Exception {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        JsonNode status = null;
        while (System.nanoTime() < deadline) {
            status = api(source, dataDir, "GET", "/v1/volumes/" + name + "/mirror", null).body();
            if (Arrays.asList(states).contains(status.path("state").asText())) {
                return status;
            }
            Thread.sleep(100);
        }
        throw new AssertionError("mirror never reached " + Arrays.toString(states) + ": " + status);
    }

    /**
     * The central test: qemu-io writes through the volume's own address (127.0.0.10) with reconnect-delay while
     * the volume is mirrored and cut over; no write fails, and the destination holds exactly every write. At queue
     * depth 1 (write after write) and 32 (bursts of 32 asynchronous writes to distinct places, then a flush), so
     * that many requests are in flight, and replayed, at the cutover.
     */
    @ParameterizedTest(name = "queue depth {0}")
    @ValueSource(ints = {1, 32})
    void qemuWritesThroughTheVolumeAddressAcrossTheCutoverWithoutAnError(final int queueDepth) throws Exception {
        moveUnderQemu(queueDepth, "127.0.0.10", null);
    }

    /**
     * The central test with TLS everywhere (issue #7), from configuration files: both tails require TLS on their
     * NBD listener and use it as a mirror source (one certificate directory each, in qemu's layout); only qemu's
     * host may open the volume ({@code unlistedVolumes: deny}); the destination accepts the mirror only from the
     * source's certificate. qemu writes through the volume's own address over TLS across the cutover.
     */
    @Test
    void qemuOverTlsAcrossTheCutoverOfAMirrorOverTls() throws Exception {
        final String host = "127.0.0.14";
        final TestPki pki = TestPki.create(dir.resolve("pki"), "storage-ca");
        final String san = "ip:127.0.0.1,ip:" + host;
        final Path qemuCerts = pki.client("qemu", "CN=qemu-host,O=Tenant", pki.caCert());
        final Path[] configs = new Path[2];
        final String[] names = {"tail-src", "tail-dst"};
        for (int i = 0; i < 2; i++) {
            final Path own = pki.tail(names[i], "CN=" + names[i] + ",O=Storage", san);
            final ObjectNode tls = json("mode", "required", "certificates", own.toString(), "unlistedVolumes", "deny");
            tls.putObject("authorization").putArray("vm1").add("dn:CN=qemu-host,O=Tenant");
            final ObjectNode config = JSON.createObjectNode();
            config.putObject("nbd").set("tls", tls);
            config.putObject("mirror").set("tls", json("mode", "required", "certificates", own.toString()));
            configs[i] = Files.writeString(dir.resolve(names[i] + ".json"), JSON.writeValueAsString(config));
        }
        moveUnderQemu(1, host, new Tls(configs[0], configs[1], "dn:CN=tail-src,O=Storage", qemuCerts));
    }

    /** Configuration files of the two tails, the source's identity the destination checks, qemu's directory. */
    private record Tls(Path sourceConfig, Path destinationConfig, String sourceIdentity, Path qemuCerts) {
    }

    private void moveUnderQemu(final int queueDepth, final String host, final Tls tls) throws Exception {
        ExternalTool.requireTool("qemu-io");
        final Path srcDir = dir.resolve("src");
        final Path dstDir = dir.resolve("dst");
        try (ServerProcess source = ServerProcess.start(srcDir, dir.resolve("src.log"),
                tls == null ? null : tls.sourceConfig());
             ServerProcess destination = ServerProcess.start(dstDir, dir.resolve("dst.log"),
                tls == null ? null : tls.destinationConfig())) {
            final int port = freePort(host);
            final String address = host + ":" + port;
            assertThat(api(source, srcDir, "POST", "/v1/volumes", json("name", "vm1", "size", SIZE)).status())
                .isEqualTo(201);
            assertThat(api(source, srcDir, "PUT", "/v1/volumes/vm1/address", json("address", address)).status())
                .isEqualTo(200);
            final ObjectNode receive = json("size", SIZE, "token", TOKEN);
            if (tls != null) {
                // Another tail's identity first: refused at once, exactly like a wrong token.
                assertThat(api(destination, dstDir, "POST", "/v1/volumes/vm1/receive",
                    json("size", SIZE, "token", TOKEN, "sourceIdentity", "dn:CN=tail-x,O=Storage")).status())
                    .isEqualTo(201);
                final Answer refused = api(source, srcDir, "POST", "/v1/volumes/vm1/mirror",
                    json("destination", "127.0.0.1:" + destination.port(), "token", TOKEN));
                assertThat(refused.status()).as("%s", refused.body()).isEqualTo(409);
                assertThat(refused.body().toString()).contains("the token is wrong");
                assertThat(api(destination, dstDir, "DELETE", "/v1/volumes/vm1", null).status()).isEqualTo(204);
                receive.put("sourceIdentity", tls.sourceIdentity());
            }
            assertThat(api(destination, dstDir, "POST", "/v1/volumes/vm1/receive", receive).status()).isEqualTo(201);

            // Writes of 4..64 KiB with a pattern byte each; within a burst each goes to its own 64 KiB slot.
            final byte[] model = new byte[(int) SIZE];
            final StringBuilder script = new StringBuilder();
            final Random random = new Random(21);
            final int slots = (int) (SIZE / 65536);
            final int bursts = queueDepth == 1 ? 2000 : 150;
            for (int b = 0; b < bursts; b++) {
                final java.util.Set<Integer> used = new java.util.HashSet<>();
                for (int i = 0; i < queueDepth; i++) {
                    int slot;
                    do {
                        slot = random.nextInt(slots);
                    } while (!used.add(slot));
                    final int pattern = 1 + (b * queueDepth + i) % 250;
                    final int length = 4096 * (1 + random.nextInt(16));
                    final long offset = slot * 65536L + 4096L * random.nextInt((65536 - length) / 4096 + 1);
                    Arrays.fill(model, (int) offset, (int) offset + length, (byte) pattern);
                    script.append(queueDepth == 1 ? "write" : "aio_write -q").append(" -P ").append(pattern)
                        .append(' ').append(offset).append(' ').append(length).append('\n');
                }
                if (queueDepth > 1) {
                    script.append("aio_flush\n");
                }
                script.append(queueDepth == 1 ? "sleep 10\n" : "sleep 100\n");
            }
            final Path scriptFile = dir.resolve("writes.qemu-io");
            Files.writeString(scriptFile, script);
            final ProcessBuilder qemu = new ProcessBuilder("sh", "-c", "qemu-io"
                + (tls == null ? "" : " --object tls-creds-x509,id=tls0,endpoint=client,dir=" + tls.qemuCerts())
                + " --image-opts driver=nbd,server.type=inet,server.host=" + host + ",server.port=" + port
                + ",export=vm1,reconnect-delay=60" + (tls == null ? "" : ",tls-creds=tls0") + " < " + scriptFile)
                .redirectErrorStream(true)
                .redirectOutput(dir.resolve("qemu-io.log").toFile());
            final Process writer = qemu.start();
            Thread.sleep(1_000);
            assertThat(writer.isAlive()).as("qemu-io still writing when the mirror starts").isTrue();
            final Answer started = api(source, srcDir, "POST", "/v1/volumes/vm1/mirror",
                json("destination", "127.0.0.1:" + destination.port(), "token", TOKEN, "bytesPerSecond", 8L << 20));
            assertThat(started.status()).as("%s", started.body()).isEqualTo(202);
            final JsonNode done = awaitMirror(source, srcDir, "vm1", "moved", "failed", "aborted");
            assertThat(done.path("state").asText()).as("%s", done).isEqualTo("moved");
            assertThat(writer.isAlive()).as("qemu-io still writing after the cutover").isTrue();
            assertThat(writer.waitFor(180, TimeUnit.SECONDS)).isTrue();
            final String qemuLog = Files.readString(dir.resolve("qemu-io.log"));
            assertThat(writer.exitValue()).as(qemuLog).isZero();
            assertThat(qemuLog).doesNotContain("error").doesNotContain("failed");
            assertThat(done.path("freezeMillis").asLong()).isBetween(0L, 5_000L);

            final JsonNode dst = api(destination, dstDir, "GET", "/v1/volumes/vm1", null).body();
            assertThat(dst.path("state").asText()).isEqualTo("serving");
            assertThat(dst.path("epoch").asLong()).isEqualTo(1);
            assertThat(dst.path("serviceAddress").asText()).isEqualTo(address);
            final JsonNode src = api(source, srcDir, "GET", "/v1/volumes/vm1", null).body();
            assertThat(src.path("state").asText()).isEqualTo("moved");
            assertThat(Arrays.equals(dataFile(dstDir, "vm1"), model))
                .as("destination holds exactly every write qemu made").isTrue();
        }
    }

    private static String nbdinfoMap(final String context, final String uri) {
        return ExternalTool.run("nbdinfo", "--json", "--map=" + context, uri).assertSuccess().stdout();
    }

    /** The snapshots as the API lists them, without what differs by design (the layer ids). */
    private java.util.List<String> snapshotList(final ServerProcess server, final Path dataDir) throws Exception {
        final java.util.List<String> out = new java.util.ArrayList<>();
        for (final JsonNode s : api(server, dataDir, "GET", "/v1/volumes/vm1/snapshots", null).body()) {
            out.add(s.path("name").asText() + " on " + s.path("parent").asText() + " created "
                + s.path("created").asText() + " holding " + s.path("ownedBytes").asLong()
                + (s.path("inLiveChain").asBoolean() ? " live" : ""));
        }
        java.util.Collections.sort(out);
        return out;
    }

    /**
     * M12: a volume with a snapshot tree moves while qemu-io writes through its own address (127.0.0.11) with
     * reconnect-delay. Below 16 MiB: s0 (the base, 4 MiB of data) &lt;- s1 (2 MiB of data, 1 MiB zeroed over s0's
     * data) &lt;- s2 (1 MiB), and after a rollback to s1, s3 (1 MiB) on a side branch; the live disc rests on s3.
     * qemu-io writes above 16 MiB. Afterwards every {@code vm1@S} export of the destination is byte-identical to
     * the source's (qemu-img compare), has the same allocation depth map (nbdinfo: each snapshot's own clusters,
     * nothing copied up), the snapshot list matches, and the live disc holds exactly every write.
     */
    @org.junit.jupiter.api.Test
    void aVolumeWithASnapshotTreeMovesWithItsSnapshotsUnderQemuWrites() throws Exception {
        ExternalTool.requireTool("qemu-io");
        ExternalTool.requireTool("qemu-img");
        ExternalTool.requireTool("nbdinfo");
        final Path srcDir = dir.resolve("src");
        final Path dstDir = dir.resolve("dst");
        try (ServerProcess source = ServerProcess.start(srcDir, dir.resolve("src.log"));
             ServerProcess destination = ServerProcess.start(dstDir, dir.resolve("dst.log"))) {
            final int port = freePort("127.0.0.11");
            final String address = "127.0.0.11:" + port;
            assertThat(api(source, srcDir, "POST", "/v1/volumes", json("name", "vm1", "size", SIZE)).status())
                .isEqualTo(201);
            final String[][] steps = {
                {"write -P 0x11 0 4M"}, {"s0"},
                {"write -P 0x22 4M 2M", "write -z 0 1M"}, {"s1"},
                {"write -P 0x33 6M 1M"}, {"s2"},
                {"rollback s1"}, {},
                {"write -P 0x44 8M 1M"}, {"s3"},
                {"write -P 0x55 10M 512k"}, {},
            };
            for (int i = 0; i < steps.length; i += 2) {
                if (steps[i][0].startsWith("rollback")) {
                    assertThat(api(source, srcDir, "POST", "/v1/volumes/vm1/snapshots/s1/rollback", null).status())
                        .isEqualTo(200);
                } else {
                    final java.util.List<String> args = new java.util.ArrayList<>(java.util.List.of("qemu-io", "-f",
                        "raw"));
                    for (final String c : steps[i]) {
                        args.add("-c");
                        args.add(c);
                    }
                    args.add(source.uri("vm1"));
                    ExternalTool.run(args).assertSuccess();
                }
                for (final String snapshot : steps[i + 1]) {
                    assertThat(api(source, srcDir, "POST", "/v1/volumes/vm1/snapshots", json("name", snapshot))
                        .status()).isEqualTo(201);
                }
            }
            final String[] snapshots = {"s0", "s1", "s2", "s3"};
            final java.util.Map<String, String> depthBefore = new java.util.HashMap<>();
            for (final String s : snapshots) {
                ExternalTool.run("qemu-img", "convert", "-f", "raw", "-O", "raw", source.uri("vm1@" + s),
                    dir.resolve(s + ".raw").toString()).assertSuccess();
                depthBefore.put(s, nbdinfoMap("qemu:allocation-depth", source.uri("vm1@" + s)));
            }
            final java.util.List<String> listBefore = snapshotList(source, srcDir);
            assertThat(listBefore).hasSize(4);
            ExternalTool.run("qemu-img", "convert", "-f", "raw", "-O", "raw", source.uri("vm1"),
                dir.resolve("live.raw").toString()).assertSuccess();
            final byte[] model = Files.readAllBytes(dir.resolve("live.raw"));
            final String liveDepthBefore = nbdinfoMap("qemu:allocation-depth", source.uri("vm1"));

            assertThat(api(source, srcDir, "PUT", "/v1/volumes/vm1/address", json("address", address)).status())
                .isEqualTo(200);
            assertThat(api(destination, dstDir, "POST", "/v1/volumes/vm1/receive",
                json("size", SIZE, "token", TOKEN)).status()).isEqualTo(201);
            final StringBuilder script = new StringBuilder();
            final Random random = new Random(22);
            for (int w = 0; w < 1500; w++) {
                final int pattern = 1 + w % 250;
                final int length = 4096 * (1 + random.nextInt(16));
                final long offset = (16L << 20) + 4096L * random.nextInt((int) ((SIZE - (16L << 20) - length) / 4096));
                Arrays.fill(model, (int) offset, (int) offset + length, (byte) pattern);
                script.append("write -P ").append(pattern).append(' ').append(offset).append(' ').append(length)
                    .append("\nsleep 10\n");
            }
            final Path scriptFile = dir.resolve("writes.qemu-io");
            Files.writeString(scriptFile, script);
            final Process writer = new ProcessBuilder("sh", "-c", "qemu-io --image-opts"
                + " driver=nbd,server.type=inet,server.host=127.0.0.11,server.port=" + port
                + ",export=vm1,reconnect-delay=60 < " + scriptFile).redirectErrorStream(true)
                .redirectOutput(dir.resolve("qemu-io.log").toFile()).start();
            Thread.sleep(1_000);
            assertThat(writer.isAlive()).as("qemu-io still writing when the mirror starts").isTrue();
            final Answer started = api(source, srcDir, "POST", "/v1/volumes/vm1/mirror",
                json("destination", "127.0.0.1:" + destination.port(), "token", TOKEN, "bytesPerSecond", 8L << 20));
            assertThat(started.status()).as("%s", started.body()).isEqualTo(202);
            // While the tree is copied, it cannot change.
            assertThat(api(source, srcDir, "POST", "/v1/volumes/vm1/snapshots", json("name", "late")).status())
                .isEqualTo(409);
            assertThat(api(source, srcDir, "DELETE", "/v1/volumes/vm1/snapshots/s2", null).status()).isEqualTo(409);
            final JsonNode done = awaitMirror(source, srcDir, "vm1", "moved", "failed", "aborted");
            assertThat(done.path("state").asText()).as("%s", done).isEqualTo("moved");
            assertThat(writer.isAlive()).as("qemu-io still writing after the cutover").isTrue();
            assertThat(writer.waitFor(180, TimeUnit.SECONDS)).isTrue();
            final String qemuLog = Files.readString(dir.resolve("qemu-io.log"));
            assertThat(writer.exitValue()).as(qemuLog).isZero();
            assertThat(qemuLog).doesNotContain("error").doesNotContain("failed");

            assertThat(snapshotList(destination, dstDir)).isEqualTo(listBefore);
            for (final String s : snapshots) {
                final ExternalTool.Result compare = ExternalTool.run("qemu-img", "compare", "-f", "raw", "-F", "raw",
                    dir.resolve(s + ".raw").toString(), destination.uri("vm1@" + s));
                assertThat(compare.exitCode()).as("snapshot %s: %s", s, compare.output()).isZero();
                assertThat(nbdinfoMap("qemu:allocation-depth", destination.uri("vm1@" + s)))
                    .as("snapshot %s holds the same clusters", s).isEqualTo(depthBefore.get(s));
            }
            ExternalTool.run("qemu-img", "convert", "-f", "raw", "-O", "raw", destination.uri("vm1"),
                dir.resolve("live-after.raw").toString()).assertSuccess();
            assertThat(Arrays.equals(Files.readAllBytes(dir.resolve("live-after.raw")), model))
                .as("the live disc holds exactly every write qemu made").isTrue();
            // Below 16 MiB nobody wrote during the mirror: the live disc's layers hold it as at the source.
            assertThat(below(nbdinfoMap("qemu:allocation-depth", destination.uri("vm1")), 16L << 20))
                .isEqualTo(below(liveDepthBefore, 16L << 20));
        }
    }

    /** The extents of an nbdinfo JSON map that start below {@code end}, cut at {@code end}. */
    private static java.util.List<String> below(final String map, final long end) throws Exception {
        final java.util.List<String> out = new java.util.ArrayList<>();
        for (final JsonNode e : JSON.readTree(map)) {
            final long offset = e.path("offset").asLong();
            if (offset < end) {
                out.add(offset + "+" + Math.min(e.path("length").asLong(), end - offset) + "=" + e.path("type"));
            }
        }
        return out;
    }

    private void prepare(final ServerProcess source, final Path srcDir, final ServerProcess destination,
                         final Path dstDir) throws Exception {
        assertThat(api(source, srcDir, "POST", "/v1/volumes", json("name", "v", "size", SIZE)).status())
            .isEqualTo(201);
        ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 6M", source.uri("v")).assertSuccess();
        assertThat(api(destination, dstDir, "POST", "/v1/volumes/v/receive", json("size", SIZE, "token", TOKEN))
            .status()).isEqualTo(201);
    }

    private Answer startMirror(final ServerProcess source, final Path srcDir, final ServerProcess destination)
        throws Exception {
        return api(source, srcDir, "POST", "/v1/volumes/v/mirror",
            json("destination", "127.0.0.1:" + destination.port(), "token", TOKEN));
    }

    /** The source dies at a cutover step; after its restart the brain settles the outcome; one writable copy. */
    @ParameterizedTest
    @ValueSource(strings = {"source.flushed", "source.handing-over", "source.committed"})
    void sourceKilledAtACutoverStep(final String fault) throws Exception {
        final Path srcDir = dir.resolve("src");
        final Path dstDir = dir.resolve("dst");
        final int srcPort = ServerProcess.freePort();
        final int srcApi = ServerProcess.freePort();
        try (ServerProcess destination = ServerProcess.start(dstDir, dir.resolve("dst.log"))) {
            try (ServerProcess source = ServerProcess.start(srcDir, dir.resolve("src.log"), srcPort, srcApi,
                "-Dnbdtail.test.faults=" + fault + "=halt")) {
                prepare(source, srcDir, destination, dstDir);
                startMirror(source, srcDir, destination);
                assertThat(source.awaitExit(60)).isEqualTo(137);
            }
            try (ServerProcess source = ServerProcess.start(srcDir, dir.resolve("src2.log"), srcPort, srcApi)) {
                final String srcState = api(source, srcDir, "GET", "/v1/volumes/v", null).body().path("state")
                    .asText();
                final JsonNode dst = api(destination, dstDir, "GET", "/v1/volumes/v", null).body();
                switch (fault) {
                    case "source.flushed" -> {
                        // Before the hand-over record: the source still owns and serves it.
                        assertThat(srcState).isEqualTo("serving");
                        assertThat(dst.path("state").asText()).isEqualTo("receiving");
                    }
                    case "source.handing-over" -> {
                        // Frozen on restart; the destination never took it: drop it there, then keep the source.
                        assertThat(srcState).isEqualTo("handing-over");
                        assertThat(nbdReachable(source.uri("v"))).isFalse();
                        assertThat(dst.path("state").asText()).isEqualTo("receiving");
                        assertThat(api(destination, dstDir, "DELETE", "/v1/volumes/v", null).status()).isEqualTo(204);
                        assertThat(api(source, srcDir, "POST", "/v1/volumes/v/mirror/resolve",
                            json("outcome", "source")).body().path("state").asText()).isEqualTo("serving");
                    }
                    case "source.committed" -> {
                        // The destination took it: the brain completes the hand-over on the source.
                        assertThat(srcState).isEqualTo("handing-over");
                        assertThat(dst.path("state").asText()).isEqualTo("serving");
                        assertThat(dst.path("epoch").asLong()).isEqualTo(1);
                        assertThat(api(source, srcDir, "POST", "/v1/volumes/v/mirror/resolve",
                            json("outcome", "moved")).body().path("state").asText()).isEqualTo("moved");
                        assertThat(nbdReachable(source.uri("v"))).isFalse();
                        assertThat(nbdReachable(destination.uri("v"))).isTrue();
                    }
                    default -> throw new AssertionError(fault);
                }
                if (!fault.equals("source.committed")) {
                    assertThat(nbdReachable(source.uri("v"))).isTrue();
                    ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x33 0 4096", source.uri("v"))
                        .assertSuccess();
                }
            }
        }
    }

    /** The destination dies before or after its record; the source stays frozen until it can ask again. */
    @ParameterizedTest
    @ValueSource(strings = {"dest.before-record", "dest.recorded"})
    void destinationKilledAtTheCommit(final String fault) throws Exception {
        final Path srcDir = dir.resolve("src");
        final Path dstDir = dir.resolve("dst");
        final int dstPort = ServerProcess.freePort();
        final int dstApi = ServerProcess.freePort();
        try (ServerProcess source = ServerProcess.start(srcDir, dir.resolve("src.log"))) {
            try (ServerProcess destination = ServerProcess.start(dstDir, dir.resolve("dst.log"), dstPort, dstApi,
                "-Dnbdtail.test.faults=" + fault + "=halt")) {
                prepare(source, srcDir, destination, dstDir);
                startMirror(source, srcDir, destination);
                assertThat(destination.awaitExit(60)).isEqualTo(137);
                final JsonNode unknown = awaitMirror(source, srcDir, "v", "unknown");
                assertThat(unknown.path("lastError").asText()).contains("unknown");
                // Frozen: a write waits (it is neither refused nor applied).
                final CompletableFuture<ExternalTool.Result> held = CompletableFuture.supplyAsync(() ->
                    ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x44 0 4096", source.uri("v")));
                Thread.sleep(1_000);
                assertThat(held).isNotDone();
                assertThat(api(source, srcDir, "DELETE", "/v1/volumes/v/mirror", null).status()).isEqualTo(409);
                try (ServerProcess again = ServerProcess.start(dstDir, dir.resolve("dst2.log"), dstPort, dstApi)) {
                    final JsonNode done = awaitMirror(source, srcDir, "v", "moved", "failed");
                    final JsonNode dst = api(again, dstDir, "GET", "/v1/volumes/v", null).body();
                    if (fault.equals("dest.before-record")) {
                        // Not taken: the session is cancelled there and the source serves again.
                        assertThat(done.path("state").asText()).isEqualTo("failed");
                        assertThat(dst.path("state").asText()).isEqualTo("receiving");
                        assertThat(held.get(60, TimeUnit.SECONDS).exitCode()).isZero();
                        assertThat(api(source, srcDir, "GET", "/v1/volumes/v", null).body().path("state").asText())
                            .isEqualTo("serving");
                    } else {
                        // Taken: the source records the move; the held write is replayed elsewhere (qemu-io
                        // without reconnect just fails), never applied to the old copy.
                        assertThat(done.path("state").asText()).isEqualTo("moved");
                        assertThat(dst.path("state").asText()).isEqualTo("serving");
                        assertThat(dst.path("epoch").asLong()).isEqualTo(1);
                        held.get(60, TimeUnit.SECONDS);
                        assertThat(dataFile(srcDir, "v")[0]).isNotEqualTo((byte) 0x44);
                        assertThat(nbdReachable(again.uri("v"))).isTrue();
                    }
                }
            }
        }
    }

    private static boolean nbdReachable(final String uri) {
        return ExternalTool.run("qemu-io", "-f", "raw", "-r", "-c", "read 0 512", uri).exitCode() == 0;
    }
}
