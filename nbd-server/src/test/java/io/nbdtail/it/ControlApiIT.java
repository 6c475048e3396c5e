package io.nbdtail.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.nbdtail.layer.Manifest;
import io.nbdtail.server.NbdTail;
import io.nbdtail.server.ServerConfig;
import io.nbdtail.testing.ExternalTool;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.BufferedWriter;
import java.io.OutputStreamWriter;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.assertj.core.api.Assertions.assertThat;

/** The control API over real HTTP against a running server, with real NBD clients where it matters. */
class ControlApiIT {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;
    private NbdTail tail;
    private String base;
    private String token;
    private int nbdPort;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

    @BeforeEach
    void start() throws Exception {
        startTail();
    }

    private void startTail() throws Exception {
        final ServerConfig config = new ServerConfig();
        config.nbd.eventLoopThreads = 2;
        config.nbd.storageThreads = 4;
        config.nbd.conclude();
        tail = NbdTail.open(dir.resolve("data"), config);
        nbdPort = tail.listen("127.0.0.1", 0).getPort();
        base = "http://127.0.0.1:" + tail.startApi("127.0.0.1", 0).getPort();
        token = Files.readString(dir.resolve("data").resolve("api-token")).trim();
    }

    @AfterEach
    void stop() throws Exception {
        if (tail != null) {
            tail.close();
        }
    }

    private HttpResponse<String> call(final String method, final String path, final String body,
                                      final String... headers) throws Exception {
        final HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(base + path)).timeout(Duration.ofSeconds(30))
            .method(method, body == null ? HttpRequest.BodyPublishers.noBody()
                : HttpRequest.BodyPublishers.ofString(body));
        b.header("Authorization", "Bearer " + token);
        for (int i = 0; i < headers.length; i += 2) {
            b.header(headers[i], headers[i + 1]);
        }
        return http.send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    private JsonNode ok(final HttpResponse<String> r, final int status) throws Exception {
        assertThat(r.statusCode()).as(r.body()).isEqualTo(status);
        return r.body().isEmpty() ? null : JSON.readTree(r.body());
    }

    private void error(final HttpResponse<String> r, final int status, final String code) throws Exception {
        assertThat(r.statusCode()).as(r.body()).isEqualTo(status);
        final JsonNode body = JSON.readTree(r.body());
        assertThat(body.get("error").asText()).isEqualTo(code);
        assertThat(body.get("message").asText()).isNotBlank();
    }

    private String nbd(final String volume) {
        return "nbd://127.0.0.1:" + nbdPort + "/" + volume;
    }

    @Test
    void shouldRefuseRequestsWithoutTheRightTokenAndKeepTheTokenFilePrivate() throws Exception {
        final HttpResponse<String> none = http.send(HttpRequest.newBuilder(URI.create(base + "/v1/status")).build(),
            HttpResponse.BodyHandlers.ofString());
        error(none, 401, "unauthorized");
        final HttpResponse<String> wrong = http.send(HttpRequest.newBuilder(URI.create(base + "/metrics"))
            .header("Authorization", "Bearer nottherighttoken0000").build(), HttpResponse.BodyHandlers.ofString());
        error(wrong, 401, "unauthorized");
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(dir.resolve("data/api-token"))))
            .isEqualTo("rw-------");
        assertThat(token).hasSizeGreaterThanOrEqualTo(32);
        ok(call("GET", "/v1/status", null), 200);
    }

    @Test
    void shouldCreateListInspectGrowAndDeleteVolumesAndServeThemAtOnce() throws Exception {
        final JsonNode created = ok(call("POST", "/v1/volumes",
            "{\"name\":\"web1\",\"size\":67108864,\"description\":\"web server\"}"), 201);
        assertThat(created.get("name").asText()).isEqualTo("web1");
        assertThat(created.get("state").asText()).isEqualTo("serving");
        assertThat(created.get("size").asLong()).isEqualTo(64L << 20);
        assertThat(created.get("layers").size()).isEqualTo(1);

        // Served at once over NBD.
        ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x77 0 1M", "-c", "read -P 0x77 0 1M", nbd("web1"))
            .assertSuccess();
        final JsonNode got = ok(call("GET", "/v1/volumes/web1", null), 200);
        assertThat(got.get("allocatedBytes").asLong()).isGreaterThanOrEqualTo(1 << 20);
        assertThat(ok(call("GET", "/v1/volumes", null), 200).get(0).get("name").asText()).isEqualTo("web1");

        final JsonNode grown = ok(call("POST", "/v1/volumes/web1/grow", "{\"size\":134217728}"), 200);
        assertThat(grown.get("size").asLong()).isEqualTo(128L << 20);
        assertThat(ExternalTool.run("nbdinfo", "--size", nbd("web1")).assertSuccess().stdout().trim())
            .isEqualTo(Long.toString(128L << 20));
        ExternalTool.run("qemu-io", "-f", "raw", "-c", "read -P 0x77 0 1M", "-c", "read -P 0 100M 1M", nbd("web1"))
            .assertSuccess();
        error(call("POST", "/v1/volumes/web1/grow", "{\"size\":1048576}"), 422, "invalid_size");

        ok(call("DELETE", "/v1/volumes/web1", null), 204);
        error(call("GET", "/v1/volumes/web1", null), 404, "volume_not_found");
        assertThat(ExternalTool.run("nbdinfo", "--size", nbd("web1")).exitCode()).isNotZero();
    }

    /** reliability.md A4: a volume that needs a check, or has moved to another tail, refuses every change. */
    @Test
    void shouldRefuseOperationsOnAVolumeThatNeedsACheckOrHasMovedAwayAndSayWhy() throws Exception {
        ok(call("POST", "/v1/volumes", "{\"name\":\"sick\",\"size\":1048576}"), 201);
        ok(call("POST", "/v1/volumes/sick/snapshots", "{\"name\":\"before\"}"), 201);
        ok(call("POST", "/v1/volumes", "{\"name\":\"gone\",\"size\":1048576}"), 201);
        tail.close();
        tail = null;
        final Path volumes = dir.resolve("data").resolve("volumes");
        // As the server leaves them: after a failed fdatasync, and after a mirror's hand-over to another tail.
        Manifest.read(volumes.resolve("sick")).withNeedsCheck(true, "fdatasync failed").write(volumes.resolve("sick"));
        Files.writeString(volumes.resolve("gone").resolve("mirror.json"),
            "{\"state\":\"moved\",\"epoch\":1,\"peer\":\"10.0.0.9:10809\",\"session\":null,"
                + "\"cancelledSession\":null,\"tokenSha256\":null,\"originId\":null,\"written\":false,"
                + "\"serviceAddress\":null,\"changed\":null}");
        startTail();

        final JsonNode status = ok(call("GET", "/v1/status", null), 200);
        assertThat(status.get("failedVolumes").toString()).contains("sick");
        assertThat(ok(call("GET", "/v1/volumes/gone", null), 200).get("state").asText()).isEqualTo("moved");
        for (final String[] op : new String[][] {
            {"POST", "/snapshots", "{\"name\":\"s2\"}"},
            {"POST", "/grow", "{\"size\":2097152}"},
            {"POST", "/scrub", null},
            {"PUT", "/acl", "{\"allow\":[\"127.0.0.1\"]}"},
            {"POST", "/snapshots/before/rollback", null},
        }) {
            final HttpResponse<String> sick = call(op[0], "/v1/volumes/sick" + op[1], op[2]);
            assertThat(sick.statusCode()).as(op[1] + " " + sick.body()).isIn(404, 409);
            assertThat(sick.body()).as(op[1]).containsAnyOf("check", "cannot be served");
            final HttpResponse<String> gone = call(op[0], "/v1/volumes/gone" + op[1], op[2]);
            assertThat(gone.statusCode()).as(op[1] + " " + gone.body()).isIn(404, 409);
            assertThat(gone.body()).as(op[1]).contains("moved");
        }
        // Neither is served, and neither is lost: the moved one can be deleted once the brain is done with it.
        assertThat(ExternalTool.run("nbdinfo", "--size", nbd("sick")).exitCode()).isNotZero();
        assertThat(ExternalTool.run("nbdinfo", "--size", nbd("gone")).exitCode()).isNotZero();
        ok(call("DELETE", "/v1/volumes/gone", null), 204);
    }

    @Test
    void shouldRejectBadInputWithClearErrorsAndDoNothing() throws Exception {
        error(call("POST", "/v1/volumes", "{\"name\":\"x\",\"size\":"), 400, "malformed_json");
        error(call("POST", "/v1/volumes", "{\"name\":\"x\",\"size\":1048576,\"colour\":\"red\"}"), 400,
            "unknown_field");
        error(call("POST", "/v1/volumes", "{\"name\":\"x\",\"size\":-512}"), 422, "invalid_size");
        error(call("POST", "/v1/volumes", "{\"name\":\"x\",\"size\":1000}"), 422, "invalid_size");
        error(call("POST", "/v1/volumes", "{\"name\":\"../x\",\"size\":1048576}"), 422, "invalid_name");
        error(call("POST", "/v1/volumes", "{\"name\":\"a/b\",\"size\":1048576}"), 422, "invalid_name");
        error(call("POST", "/v1/volumes", "{\"name\":\"big\",\"size\":123456789012345678901234567890}"), 422,
            "invalid_value");
        error(call("POST", "/v1/volumes", null), 400, "missing_body");
        error(call("GET", "/v1/volumes/nope", null), 404, "volume_not_found");
        error(call("GET", "/v1/volumes/a/b/c/d", null), 404, "not_found");
        error(call("PATCH", "/v1/volumes", "{}"), 405, "method_not_allowed");
        error(call("GET", "/v1/operations/none", null), 404, "operation_not_found");
        ok(call("POST", "/v1/volumes", "{\"name\":\"dup\",\"size\":1048576}"), 201);
        error(call("POST", "/v1/volumes", "{\"name\":\"dup\",\"size\":1048576}"), 409, "volume_exists");
        error(call("PUT", "/v1/volumes/dup/acl", "{\"allow\":[\"10.0.0.0/33\"]}"), 422, "invalid_value");
        error(call("PUT", "/v1/volumes/dup/acl", "{\"allow\":[\"example.com\"]}"), 422, "invalid_value");
        // Nothing was half-done: only the one good volume exists.
        assertThat(ok(call("GET", "/v1/volumes", null), 200).size()).isEqualTo(1);
        assertThat(Files.list(dir.resolve("data/volumes")).count()).isEqualTo(1);
    }

    /**
     * reliability.md R4: the API flooded with malformed and unauthenticated calls while qemu-io writes and reads
     * back a volume. Every bad call gets its 4xx, none a 5xx, and the guest's I/O is untouched.
     */
    @Test
    void shouldRejectAFloodOfBadCallsWhileTheDataPathGoesOn() throws Exception {
        ok(call("POST", "/v1/volumes", "{\"name\":\"busy\",\"size\":67108864}"), 201);
        final CompletableFuture<ExternalTool.Result> io = CompletableFuture.supplyAsync(() -> ExternalTool.run(
            "qemu-io", "-f", "raw", "-c", "aio_write -P 0x5c 0 16M", "-c", "aio_write -P 0x5d 16M 16M", "-c",
            "aio_flush", "-c", "write -P 0x5e 32M 16M", "-c", "read -P 0x5c 0 16M", "-c", "read -P 0x5d 16M 16M",
            "-c", "read -P 0x5e 32M 16M", nbd("busy")));
        final String[][] bad = {
            {"POST", "/v1/volumes", "{\"name\":"},
            {"POST", "/v1/volumes", "[1,2,3]"},
            {"POST", "/v1/volumes", "{\"name\":\"x\",\"size\":\"lots\"}"},
            {"PUT", "/v1/volumes/busy/acl", "{\"allow\":7}"},
            {"POST", "/v1/volumes/busy/grow", "\u0000\u0001garbage"},
            {"GET", "/v1/volumes/../../etc/passwd", null},
            {"DELETE", "/v1/volumes", null},
        };
        final int threads = 16;
        final int perThread = 60;
        final ExecutorService pool = Executors.newFixedThreadPool(threads);
        final AtomicInteger answered = new AtomicInteger();
        final List<Future<?>> flood = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            final int thread = t;
            flood.add(pool.submit(() -> {
                for (int i = 0; i < perThread; i++) {
                    final String[] c = bad[(thread + i) % bad.length];
                    final HttpResponse<String> r = (thread + i) % 5 == 0
                        ? http.send(HttpRequest.newBuilder(URI.create(base + "/v1/volumes")).header("Authorization",
                            "Bearer wrong").build(), HttpResponse.BodyHandlers.ofString())
                        : call(c[0], c[1], c[2]);
                    assertThat(r.statusCode()).as(c[0] + " " + c[1] + " " + r.body()).isBetween(400, 499);
                    answered.incrementAndGet();
                }
                return null;
            }));
        }
        for (final Future<?> f : flood) {
            f.get(120, TimeUnit.SECONDS);
        }
        pool.shutdown();
        assertThat(answered.get()).isEqualTo(threads * perThread);
        final ExternalTool.Result result = io.get(120, TimeUnit.SECONDS);
        assertThat(result.exitCode()).as(result.output()).isZero();
        assertThat(result.output()).doesNotContain("failed").doesNotContain("error");
        assertThat(ok(call("GET", "/v1/volumes/busy", null), 200).get("size").asLong()).isEqualTo(64L << 20);
        assertThat(ok(call("GET", "/v1/status", null), 200).get("health").asText()).isEqualTo("ok");
    }

    @Test
    void shouldReturnTheFirstResultForARetriedIdempotentCreateEvenAfterARestart() throws Exception {
        final String body = "{\"name\":\"idem\",\"size\":1048576}";
        final HttpResponse<String> first = call("POST", "/v1/volumes", body, "Idempotency-Key", "key-1");
        final HttpResponse<String> second = call("POST", "/v1/volumes", body, "Idempotency-Key", "key-1");
        assertThat(first.statusCode()).isEqualTo(201);
        assertThat(second.statusCode()).isEqualTo(201);
        assertThat(JSON.readTree(second.body()).get("id")).isEqualTo(JSON.readTree(first.body()).get("id"));
        error(call("POST", "/v1/volumes", "{\"name\":\"other\",\"size\":1048576}", "Idempotency-Key", "key-1"), 422,
            "idempotency_key_reused");
        tail.close();
        startTail();
        final HttpResponse<String> third = call("POST", "/v1/volumes", body, "Idempotency-Key", "key-1");
        assertThat(third.statusCode()).isEqualTo(201);
        assertThat(JSON.readTree(third.body()).get("id")).isEqualTo(JSON.readTree(first.body()).get("id"));
        // Without the key, a second create is a conflict: the key is what made the retry safe.
        error(call("POST", "/v1/volumes", body), 409, "volume_exists");
    }

    @Test
    void shouldAnswerFiftyConcurrentStatusCallsWhileALongOperationRuns() throws Exception {
        ok(call("POST", "/v1/volumes", "{\"name\":\"scrubbed\",\"size\":67108864}"), 201);
        final JsonNode op = ok(call("POST", "/v1/volumes/scrubbed/scrub", "{\"bytesPerSecond\":8388608}"), 202);
        final String id = op.get("id").asText();
        assertThat(op.get("state").asText()).isEqualTo("running");
        final List<CompletableFuture<HttpResponse<String>>> calls = new ArrayList<>();
        for (int i = 0; i < 50; i++) {
            calls.add(http.sendAsync(HttpRequest.newBuilder(URI.create(base + "/v1/status"))
                .header("Authorization", "Bearer " + token).build(), HttpResponse.BodyHandlers.ofString()));
        }
        for (final CompletableFuture<HttpResponse<String>> c : calls) {
            final HttpResponse<String> r = c.get(30, TimeUnit.SECONDS);
            assertThat(r.statusCode()).isEqualTo(200);
            assertThat(JSON.readTree(r.body()).get("health").asText()).isEqualTo("ok");
        }
        // All fifty were answered while the operation was still running: none waited on it.
        final JsonNode during = ok(call("GET", "/v1/operations/" + id, null), 200);
        assertThat(during.get("state").asText()).isEqualTo("running");
        assertThat(during.get("bytesTotal").asLong()).isEqualTo(64L << 20);
        assertThat(during.has("etaSeconds")).isTrue();
        error(call("POST", "/v1/volumes/scrubbed/scrub", null), 409, "operation_running");

        final JsonNode cancelled = ok(call("DELETE", "/v1/operations/" + id, null), 200);
        assertThat(cancelled.get("id").asText()).isEqualTo(id);
        JsonNode after = null;
        for (int i = 0; i < 100; i++) {
            after = ok(call("GET", "/v1/operations/" + id, null), 200);
            if (!after.get("state").asText().equals("running")) {
                break;
            }
            Thread.sleep(50);
        }
        assertThat(after.get("state").asText()).isEqualTo("cancelled");
    }

    @Test
    void shouldScrubAVolumeToCompletion() throws Exception {
        ok(call("POST", "/v1/volumes", "{\"name\":\"small\",\"size\":4194304}"), 201);
        final String id = ok(call("POST", "/v1/volumes/small/scrub", null), 202).get("id").asText();
        JsonNode op = null;
        for (int i = 0; i < 200; i++) {
            op = ok(call("GET", "/v1/operations/" + id, null), 200);
            if (!op.get("state").asText().equals("running")) {
                break;
            }
            Thread.sleep(50);
        }
        assertThat(op.get("state").asText()).isEqualTo("succeeded");
        assertThat(op.get("bytesDone").asLong()).isEqualTo(4L << 20);
        assertThat(op.get("progress").asDouble()).isEqualTo(1.0);
        assertThat(ok(call("GET", "/v1/operations", null), 200).get(0).get("id").asText()).isEqualTo(id);
    }

    @Test
    void shouldReportAnOperationInterruptedByARestartAsFailed() throws Exception {
        ok(call("POST", "/v1/volumes", "{\"name\":\"restart\",\"size\":67108864}"), 201);
        final String id = ok(call("POST", "/v1/volumes/restart/scrub", "{\"bytesPerSecond\":1048576}"), 202)
            .get("id").asText();
        tail.close();
        startTail();
        final JsonNode op = ok(call("GET", "/v1/operations/" + id, null), 200);
        assertThat(op.get("state").asText()).isEqualTo("failed");
        assertThat(op.get("error").asText()).contains("interrupted");
    }

    @Test
    void shouldListAndDisconnectClientsAndRefuseDeleteWhileConnected() throws Exception {
        ok(call("POST", "/v1/volumes", "{\"name\":\"busy\",\"size\":16777216}"), 201);
        final Process qemu = interactiveQemuIo(nbd("busy"));
        try {
            final JsonNode clients = awaitClients("busy", 1);
            final JsonNode client = clients.get(0);
            assertThat(client.get("address").asText()).contains("127.0.0.1");
            assertThat(client.get("requests").asLong()).isPositive();
            error(call("DELETE", "/v1/volumes/busy", null), 409, "volume_busy");
            ok(call("DELETE", "/v1/volumes/busy/clients/" + client.get("id").asText(), null), 204);
            awaitClients("busy", 0);
            error(call("DELETE", "/v1/volumes/busy/clients/nobody", null), 404, "client_not_found");
        } finally {
            qemu.destroyForcibly().waitFor();
        }
        final Process again = interactiveQemuIo(nbd("busy"));
        try {
            awaitClients("busy", 1);
            ok(call("DELETE", "/v1/volumes/busy?force=true", null), 204);
            error(call("GET", "/v1/volumes/busy", null), 404, "volume_not_found");
        } finally {
            again.destroyForcibly().waitFor();
        }
    }

    @Test
    void shouldDisconnectAQemuClientThatAnAclChangeNoLongerAllowsAndHideTheVolumeFromIt() throws Exception {
        ok(call("POST", "/v1/volumes", "{\"name\":\"guarded\",\"size\":16777216}"), 201);
        final JsonNode open = ok(call("GET", "/v1/volumes/guarded/acl", null), 200);
        assertThat(open.get("allow").isNull()).isTrue();
        assertThat(open.get("effectiveDefault").asText()).isEqualTo("allow");
        final Process qemu = interactiveQemuIo(nbd("guarded"));
        try {
            awaitClients("guarded", 1);
            final JsonNode acl = ok(call("PUT", "/v1/volumes/guarded/acl",
                "{\"allow\":[\"10.1.0.0/16\",\"fd00::/8\"]}"), 200);
            assertThat(acl.get("allow").toString()).contains("10.1.0.0/16").contains("fd00:0:0:0:0:0:0:0/8");
            awaitClients("guarded", 0);
        } finally {
            qemu.destroyForcibly().waitFor();
        }
        // Refused now, with the same answer as for a volume that does not exist.
        final ExternalTool.Result refused = ExternalTool.run("nbdinfo", nbd("guarded"));
        final ExternalTool.Result missing = ExternalTool.run("nbdinfo", nbd("missing"));
        assertThat(refused.exitCode()).isNotZero();
        assertThat(refused.stderr().replace("guarded", "X")).isEqualTo(missing.stderr().replace("missing", "X"));
        assertThat(ExternalTool.run("nbdinfo", "--list", "nbd://127.0.0.1:" + nbdPort).stdout())
            .doesNotContain("guarded");
        // Allowed again by address, and the list survives a restart.
        ok(call("PUT", "/v1/volumes/guarded/acl", "{\"allow\":[\"127.0.0.0/8\"]}"), 200);
        tail.close();
        startTail();
        assertThat(ok(call("GET", "/v1/volumes/guarded/acl", null), 200).get("allow").get(0).asText())
            .isEqualTo("127.0.0.0/8");
        ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 3 0 4k", "-c", "read -P 3 0 4k", nbd("guarded"))
            .assertSuccess();
    }

    @Test
    void shouldExposePrometheusMetricsOfRealTraffic() throws Exception {
        ok(call("POST", "/v1/volumes", "{\"name\":\"measured\",\"size\":16777216}"), 201);
        ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 1 0 64k", "-c", "write -f -P 2 64k 64k", "-c",
            "read 0 128k", "-c", "flush", nbd("measured")).assertSuccess();
        // One read far past the end: strict mode off makes libnbd send it; the server answers EINVAL.
        final ExternalTool.Result bad = ExternalTool.run("nbdsh", "-u", nbd("measured"), "-c", "h.set_strict_mode(0)",
            "-c", "h.pread(4096, 1 << 40)");
        assertThat(bad.stderr()).contains("Invalid argument");
        final HttpResponse<String> r = call("GET", "/metrics", null);
        assertThat(r.statusCode()).isEqualTo(200);
        assertThat(r.headers().firstValue("Content-Type").orElse("")).startsWith("text/plain; version=0.0.4");
        final String text = r.body();
        assertThat(sample(text, "nbdtail_requests_total{volume=\"measured\",command=\"write\"}")).isEqualTo(2);
        assertThat(sample(text, "nbdtail_bytes_total{volume=\"measured\",direction=\"write\"}")).isEqualTo(131072);
        assertThat(sample(text, "nbdtail_bytes_total{volume=\"measured\",direction=\"read\"}"))
            .isGreaterThanOrEqualTo(131072);
        assertThat(sample(text, "nbdtail_errors_total{volume=\"measured\",error=\"EINVAL\"}")).isEqualTo(1);
        assertThat(sample(text, "nbdtail_request_duration_seconds_count{volume=\"measured\",command=\"write\"}"))
            .isEqualTo(2);
        assertThat(sample(text, "nbdtail_request_duration_seconds_bucket{volume=\"measured\",command=\"write\","
            + "le=\"+Inf\"}")).isEqualTo(2);
        assertThat(sample(text, "nbdtail_flushes_total{volume=\"measured\"}")).isGreaterThanOrEqualTo(2);
        assertThat(sample(text, "nbdtail_flush_duration_seconds_count{volume=\"measured\"}"))
            .isGreaterThanOrEqualTo(2);
        assertThat(sample(text, "nbdtail_requests_in_flight{volume=\"measured\"}")).isZero();
        assertThat(text).contains("# TYPE nbdtail_request_duration_seconds histogram");
    }

    @Test
    void shouldAnswer503WhileShuttingDownExceptForStatus() throws Exception {
        tail.nbd().context().beginShutdown();
        error(call("GET", "/v1/volumes", null), 503, "shutting_down");
        assertThat(ok(call("GET", "/v1/status", null), 200).get("health").asText()).isEqualTo("shutting-down");
    }

    @Test
    void shouldServeExactlyThePathsTheOpenApiDocumentDescribes() throws Exception {
        final List<String> documented = new ArrayList<>();
        String path = null;
        boolean inPaths = false;
        for (final String line : Files.readAllLines(Path.of("..", "docs", "api", "openapi.yaml"))) {
            if (line.equals("paths:")) {
                inPaths = true;
                continue;
            }
            if (inPaths && !line.isEmpty() && !line.startsWith(" ")) {
                break;
            }
            final Matcher p = Pattern.compile("^  (/\\S*):$").matcher(line);
            final Matcher m = Pattern.compile("^    (get|put|post|delete|patch):$").matcher(line);
            if (inPaths && p.matches()) {
                path = p.group(1);
            } else if (inPaths && m.matches()) {
                documented.add(m.group(1).toUpperCase() + " " + path);
            }
        }
        assertThat(documented).isNotEmpty();
        assertThat(tail.api().routes()).containsExactlyInAnyOrderElementsOf(documented);
    }

    private static long sample(final String text, final String series) {
        for (final String line : text.split("\n")) {
            if (line.startsWith(series + " ")) {
                return (long) Double.parseDouble(line.substring(series.length() + 1).trim());
            }
        }
        throw new AssertionError("no sample " + series + " in:\n" + text);
    }

    /** A qemu-io that stays connected, reading commands from stdin. */
    private static Process interactiveQemuIo(final String uri) throws Exception {
        final Process p = new ProcessBuilder("qemu-io", "-f", "raw", uri).redirectErrorStream(true).start();
        final BufferedWriter in = new BufferedWriter(new OutputStreamWriter(p.getOutputStream(),
            StandardCharsets.UTF_8));
        in.write("read 0 4k\n");
        in.flush();
        return p;
    }

    private JsonNode awaitClients(final String volume, final int count) throws Exception {
        JsonNode clients = null;
        for (int i = 0; i < 200; i++) {
            clients = ok(call("GET", "/v1/volumes/" + volume + "/clients", null), 200);
            if (clients.size() == count && (count == 0 || clients.get(0).get("requests").asLong() > 0)) {
                return clients;
            }
            Thread.sleep(50);
        }
        throw new AssertionError("expected " + count + " client(s) of " + volume + ", got " + clients);
    }
}
