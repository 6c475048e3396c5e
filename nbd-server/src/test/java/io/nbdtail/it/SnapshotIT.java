package io.nbdtail.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.nbdtail.server.NbdTail;
import io.nbdtail.server.ServerConfig;
import io.nbdtail.testing.ExternalTool;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Snapshots through the running server with real clients: qemu-io and fio write, nbdinfo and qemu-img read
 * the layer contexts, snapshot exports and clones; a libnbd script checks that a snapshot taken under 32
 * in-flight writes is a point in time.
 */
class SnapshotIT {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long MIB = 1L << 20;

    @TempDir
    Path dir;
    private NbdTail tail;
    private String base;
    private Path tokenFile;
    private int nbdPort;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

    @BeforeEach
    void start() throws Exception {
        final ServerConfig config = new ServerConfig();
        config.nbd.eventLoopThreads = 2;
        config.nbd.storageThreads = 4;
        config.nbd.conclude();
        tail = NbdTail.open(dir.resolve("data"), config);
        nbdPort = tail.listen("127.0.0.1", 0).getPort();
        base = "http://127.0.0.1:" + tail.startApi("127.0.0.1", 0).getPort();
        tokenFile = dir.resolve("data").resolve("api-token");
    }

    @AfterEach
    void stop() throws Exception {
        tail.close();
    }

    private JsonNode call(final String method, final String path, final String body, final int expect)
        throws Exception {
        final HttpRequest request = HttpRequest.newBuilder(URI.create(base + path)).timeout(Duration.ofSeconds(60))
            .method(method, body == null ? HttpRequest.BodyPublishers.noBody()
                : HttpRequest.BodyPublishers.ofString(body))
            .header("Authorization", "Bearer " + Files.readString(tokenFile).trim()).build();
        final HttpResponse<String> r = http.send(request, HttpResponse.BodyHandlers.ofString());
        assertThat(r.statusCode()).as(method + " " + path + ": " + r.body()).isEqualTo(expect);
        return r.body().isEmpty() ? null : JSON.readTree(r.body());
    }

    private HttpResponse<String> send(final String method, final String path) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create(base + path)).timeout(Duration.ofSeconds(60))
            .method(method, HttpRequest.BodyPublishers.noBody())
            .header("Authorization", "Bearer " + Files.readString(tokenFile).trim()).build(),
            HttpResponse.BodyHandlers.ofString());
    }

    private void createVolume(final String name, final long size) throws Exception {
        call("POST", "/v1/volumes", "{\"name\":\"" + name + "\",\"size\":" + size + "}", 201);
    }

    private void snapshot(final String volume, final String name) throws Exception {
        call("POST", "/v1/volumes/" + volume + "/snapshots", "{\"name\":\"" + name + "\"}", 201);
    }

    private void awaitOperation(final JsonNode op) throws Exception {
        final String id = op.get("id").asText();
        for (int i = 0; i < 600; i++) {
            final JsonNode now = call("GET", "/v1/operations/" + id, null, 200);
            final String state = now.get("state").asText();
            if (!state.equals("running") && !state.equals("queued")) {
                assertThat(state).as(now.toString()).isEqualTo("succeeded");
                return;
            }
            Thread.sleep(100);
        }
        throw new AssertionError("operation " + id + " did not finish");
    }

    private String nbd(final String export) {
        return "nbd://127.0.0.1:" + nbdPort + "/" + export;
    }

    private void qemuIo(final String export, final String... commands) {
        final List<String> args = new ArrayList<>(List.of("qemu-io", "-f", "raw"));
        if (export.contains("@")) {
            args.add("-r"); // snapshot exports are read-only; qemu-io opens read-write unless told
        }
        for (final String c : commands) {
            args.add("-c");
            args.add(c);
        }
        args.add(nbd(export));
        ExternalTool.run(args).assertSuccess();
    }

    /** {@code nbdinfo --map=CONTEXT} as (offset, length, value) triples. */
    private List<long[]> map(final String export, final String context) throws Exception {
        final JsonNode extents = JSON.readTree(ExternalTool.run("nbdinfo", "--json", "--map=" + context,
            nbd(export)).assertSuccess().stdout());
        final List<long[]> out = new ArrayList<>();
        for (final JsonNode e : extents) {
            out.add(new long[] {e.get("offset").asLong(), e.get("length").asLong(), e.get("type").asLong()});
        }
        return out;
    }

    private static long valueAt(final List<long[]> map, final long offset) {
        for (final long[] e : map) {
            if (offset >= e[0] && offset < e[0] + e[1]) {
                return e[2];
            }
        }
        throw new AssertionError("no extent covers " + offset);
    }

    @Test
    void snapshotExportKeepsOldDataWhileTheLiveDiscChanges() throws Exception {
        createVolume("disk", 16 * MIB);
        qemuIo("disk", "write -P 0xaa 0 4M");
        snapshot("disk", "before");
        qemuIo("disk", "write -P 0xbb 1M 64k", "write -P 0xcc 3000 1000");
        // The snapshot still reads the old pattern everywhere; the live disc the new one.
        qemuIo("disk@before", "read -P 0xaa 0 4M");
        qemuIo("disk", "read -P 0xbb 1M 64k", "read -P 0xcc 3000 1000", "read -P 0xaa 0 3000",
            "read -P 0xaa 4000 1044576");
        // The snapshot export is read-only.
        final ExternalTool.Result write = ExternalTool.run("qemu-io", "-f", "raw", "-c", "write 0 512",
            nbd("disk@before"));
        assertThat(write.exitCode()).isNotZero();
        assertThat(write.output()).containsAnyOf("Permission denied", "read-only", "Read-only");
    }

    @Test
    void allocationDepthAndDirtyBitmapDescribeTheLayers() throws Exception {
        createVolume("layers", 16 * MIB);
        qemuIo("layers", "write -P 1 0 1M");             // base
        snapshot("layers", "s1");
        qemuIo("layers", "write -P 2 2M 1M");            // layer 1
        snapshot("layers", "s2");
        qemuIo("layers", "write -P 3 4M 1M", "write -z 6M 1M"); // active, one range zeroed
        final List<long[]> depth = map("layers", "qemu:allocation-depth");
        assertThat(valueAt(depth, 0)).isEqualTo(3);              // base is two below the active layer
        assertThat(valueAt(depth, 2 * MIB)).isEqualTo(2);
        assertThat(valueAt(depth, 4 * MIB)).isEqualTo(1);
        assertThat(valueAt(depth, 6 * MIB)).isEqualTo(1);        // zero-marked in the active layer
        assertThat(valueAt(depth, 10 * MIB)).isEqualTo(0);       // never written
        final List<long[]> allocation = map("layers", "base:allocation");
        assertThat(valueAt(allocation, 0)).isEqualTo(0);         // data
        assertThat(valueAt(allocation, 2 * MIB)).isEqualTo(0);
        assertThat(valueAt(allocation, 6 * MIB)).isEqualTo(2);   // ZERO
        assertThat(valueAt(allocation, 10 * MIB)).isEqualTo(3);  // HOLE|ZERO
        final List<long[]> dirty = map("layers", "qemu:dirty-bitmap:s1");
        assertThat(valueAt(dirty, 0)).isEqualTo(0);
        assertThat(valueAt(dirty, 2 * MIB)).isEqualTo(1);
        assertThat(valueAt(dirty, 4 * MIB)).isEqualTo(1);
        assertThat(valueAt(dirty, 6 * MIB)).isEqualTo(1);
        assertThat(valueAt(dirty, 10 * MIB)).isEqualTo(0);
        assertThat(valueAt(map("layers", "qemu:dirty-bitmap:s2"), 2 * MIB)).isEqualTo(0);
        // qemu-img map reads a dirty bitmap through the x-dirty-bitmap option: dirty ranges show as "data":false.
        final JsonNode qemuMap = JSON.readTree(ExternalTool.run("qemu-img", "map", "--output=json", "--image-opts",
            "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=" + nbdPort
                + ",export=layers,x-dirty-bitmap=qemu:dirty-bitmap:s1").assertSuccess().stdout());
        final List<long[]> notData = new ArrayList<>();
        for (final JsonNode e : qemuMap) {
            if (!e.get("data").asBoolean()) {
                notData.add(new long[] {e.get("start").asLong(), e.get("length").asLong()});
            }
        }
        // qemu inverts the bitmap's meaning: dirty clusters are reported as "data": false.
        assertThat(notData).anySatisfy(e -> assertThat(e[0]).isEqualTo(2 * MIB));
        assertThat(notData).noneSatisfy(e -> assertThat(e[0]).isLessThan(MIB));
        // The snapshot export offers the bitmaps of snapshots below it only.
        final String contexts = ExternalTool.run("nbdinfo", "--list", "--content", nbd("layers@s2")).output();
        assertThat(ExternalTool.run("nbdinfo", "--map=qemu:dirty-bitmap:s1", nbd("layers@s2")).exitCode())
            .as(contexts).isZero();
    }

    @Test
    void snapshotUnderFioMatchesACopyTakenAtTheSamePoint() throws Exception {
        ExternalTool.requireTool("fio");
        createVolume("busy", 64 * MIB);
        final Thread fio = Thread.ofPlatform().start(() -> ExternalTool.run(Map.of(), 120, "fio", "--name=w",
            "--ioengine=nbd", "--uri=" + nbd("busy"), "--rw=randwrite", "--bs=4k", "--iodepth=16",
            "--time_based", "--runtime=6", "--size=64M").assertSuccess());
        Thread.sleep(2000);
        snapshot("busy", "mid");
        final Path copy = dir.resolve("copy.raw");
        ExternalTool.run("nbdcopy", nbd("busy@mid"), copy.toString()).assertSuccess();
        fio.join();
        // fio rewrote much of the disc meanwhile; the snapshot did not move.
        ExternalTool.run("qemu-img", "compare", "-f", "raw", "-F", "raw", nbd("busy@mid"), copy.toString())
            .assertSuccess();
        assertThat(ExternalTool.run("qemu-img", "compare", "-f", "raw", "-F", "raw", nbd("busy"), copy.toString())
            .exitCode()).isEqualTo(1);
    }

    @Test
    void snapshotUnderManyInFlightWritesIsAPointInTime() throws Exception {
        createVolume("pit", 8 * MIB);
        final ExternalTool.Result r = ExternalTool.run(Map.of("PYTHONDONTWRITEBYTECODE", "1"), 300,
            ExternalTool.PYTHON, Path.of("src/test/python/snapshot/point_in_time.py").toString(),
            "nbd://127.0.0.1:" + nbdPort + "/", "pit", base, tokenFile.toString());
        assertThat(r.exitCode()).as(r.output()).isZero();
        assertThat(r.stdout()).contains("ok:");
    }

    @Test
    void deleteUnderFioKeepsEveryByteTheWriterVerifies() throws Exception {
        ExternalTool.requireTool("fio");
        createVolume("merge", 32 * MIB);
        qemuIo("merge", "write -P 0x11 0 32M");
        snapshot("merge", "old");
        qemuIo("merge", "write -P 0x22 0 8M");
        snapshot("merge", "newer");
        final Path copyNewer = dir.resolve("newer.raw");
        ExternalTool.run("nbdcopy", nbd("merge@newer"), copyNewer.toString()).assertSuccess();
        // fio writes and verifies its own blocks while the oldest snapshot is merged away under it.
        final Thread fio = Thread.ofPlatform().start(() -> ExternalTool.run(Map.of(), 180, "fio", "--name=v",
            "--ioengine=nbd", "--uri=" + nbd("merge"), "--rw=randwrite", "--bs=4k", "--iodepth=16",
            "--size=16M", "--offset=16M", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1")
            .assertSuccess());
        Thread.sleep(300);
        awaitOperation(call("DELETE", "/v1/volumes/merge/snapshots/old", null, 202));
        fio.join();
        // The remaining snapshot is unchanged byte for byte; the live disc's first half is still 0x22/0x11.
        ExternalTool.run("qemu-img", "compare", "-f", "raw", "-F", "raw", nbd("merge@newer"), copyNewer.toString())
            .assertSuccess();
        qemuIo("merge", "read -P 0x22 0 8M", "read -P 0x11 8M 8M");
        assertThat(call("GET", "/v1/volumes/merge/snapshots", null, 200)).hasSize(1);
        // The base file was merged away: the volume still describes itself, chain bottom first.
        final JsonNode volume = call("GET", "/v1/volumes/merge", null, 200);
        assertThat(volume.get("layers")).hasSize(2);
        assertThat(volume.get("layers").get(0).get("snapshot").asText()).isEqualTo("newer");
        assertThat(volume.get("allocatedBytes").asLong()).isGreaterThan(0);
        call("GET", "/v1/volumes/merge/snapshots/old", null, 404);
    }

    @Test
    void rollbackIsRefusedWhileAClientIsConnectedAndRestoresTheSnapshotAfter() throws Exception {
        createVolume("rb", 8 * MIB);
        qemuIo("rb", "write -P 0x33 0 1M");
        snapshot("rb", "good");
        qemuIo("rb", "write -P 0x44 0 1M");
        final ProcessBuilder pb = new ProcessBuilder("nbdsh", "-u", nbd("rb"), "-c", "import time; time.sleep(30)")
            .redirectErrorStream(true);
        pb.environment().put("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"); // Debian's python3, which has libnbd
        final Process holder = pb.start();
        try {
            for (int i = 0; i < 200 && call("GET", "/v1/volumes/rb/clients", null, 200).isEmpty(); i++) {
                Thread.sleep(50);
            }
            assertThat(call("GET", "/v1/volumes/rb/clients", null, 200)).as("nbdsh connected").isNotEmpty();
            final JsonNode refused = call("POST", "/v1/volumes/rb/snapshots/good/rollback", null, 409);
            assertThat(refused.get("message").asText()).contains("connected client");
        } finally {
            holder.destroyForcibly().waitFor();
        }
        for (int i = 0; i < 100 && !call("GET", "/v1/volumes/rb/clients", null, 200).isEmpty(); i++) {
            Thread.sleep(50);
        }
        call("POST", "/v1/volumes/rb/snapshots/good/rollback", null, 200);
        qemuIo("rb", "read -P 0x33 0 1M");
        // The snapshot itself stays, and a write after the rollback does not touch it.
        qemuIo("rb", "write -P 0x55 0 4k");
        qemuIo("rb@good", "read -P 0x33 0 1M");
    }

    @Test
    void cloneSharesTheSnapshotAndDivergesFromIt() throws Exception {
        createVolume("origin", 8 * MIB);
        qemuIo("origin", "write -P 0x66 0 2M");
        snapshot("origin", "gold");
        qemuIo("origin", "write -P 0x77 0 1M");
        call("POST", "/v1/volumes/origin/snapshots/gold/clone", "{\"name\":\"copy\"}", 201);
        ExternalTool.run("qemu-img", "compare", "-f", "raw", "-F", "raw", nbd("copy"), nbd("origin@gold"))
            .assertSuccess();
        qemuIo("copy", "write -P 0x88 1M 1M");
        qemuIo("copy", "read -P 0x66 0 1M", "read -P 0x88 1M 1M");
        qemuIo("origin", "read -P 0x77 0 1M", "read -P 0x66 1M 1M");
        qemuIo("origin@gold", "read -P 0x66 0 2M");
    }

    @Test
    void errorsSayWhatToDo() throws Exception {
        createVolume("e", MIB);
        snapshot("e", "one");
        assertThat(call("POST", "/v1/volumes/e/snapshots", "{\"name\":\"one\"}", 409).get("error").asText())
            .isEqualTo("snapshot_exists");
        assertThat(call("POST", "/v1/volumes/e/snapshots", "{\"name\":\"a@b\"}", 422).get("error").asText())
            .isEqualTo("invalid_name");
        assertThat(call("DELETE", "/v1/volumes/e/snapshots/nope", null, 404).get("message").asText())
            .contains("list them");
        assertThat(ExternalTool.run("nbdinfo", nbd("e@nope")).exitCode()).isNotZero();
    }

    /** reliability.md S10: snapshot calls racing on one volume each fully succeed or fully fail. */
    @Test
    void racingSnapshotCallsEachFullySucceedOrFail() throws Exception {
        createVolume("race", 4 * MIB);
        qemuIo("race", "write -P 0x12 0 4M");
        final java.util.Set<String> created = java.util.concurrent.ConcurrentHashMap.newKeySet();
        final java.util.Set<String> deleted = java.util.concurrent.ConcurrentHashMap.newKeySet();
        final List<Thread> threads = new ArrayList<>();
        for (int t = 0; t < 4; t++) {
            final int id = t;
            threads.add(Thread.ofPlatform().start(() -> {
                try {
                    for (int i = 0; i < 3; i++) {
                        final String name = "r" + id + "-" + i;
                        call("POST", "/v1/volumes/race/snapshots", "{\"name\":\"" + name + "\"}", 201);
                        created.add(name);
                        call("GET", "/v1/volumes/race/snapshots", null, 200);
                        if (i == 1) {
                            // One merge per volume at a time: a racing delete is refused whole (409) and retried.
                            HttpResponse<String> r;
                            while ((r = send("DELETE", "/v1/volumes/race/snapshots/" + name)).statusCode() == 409) {
                                assertThat(r.body()).contains("operation_running");
                                Thread.sleep(20);
                            }
                            assertThat(r.statusCode()).as(r.body()).isEqualTo(202);
                            awaitOperation(JSON.readTree(r.body()));
                            deleted.add(name);
                        }
                    }
                } catch (final Exception e) {
                    throw new RuntimeException(e);
                }
            }));
        }
        for (final Thread t : threads) {
            t.join();
        }
        final java.util.Set<String> listed = new java.util.TreeSet<>();
        for (final JsonNode s : call("GET", "/v1/volumes/race/snapshots", null, 200)) {
            listed.add(s.get("name").asText());
        }
        created.removeAll(deleted);
        assertThat(listed).isEqualTo(new java.util.TreeSet<>(created));
        for (final String name : listed) {
            qemuIo("race@" + name, "read -P 0x12 0 4M");
        }
    }
}
