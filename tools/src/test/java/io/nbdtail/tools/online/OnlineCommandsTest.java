package io.nbdtail.tools.online;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.nbdtail.tools.Main;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import picocli.CommandLine;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The online commands in-process against {@link FakeApi}: what they send, what they print, and their exit codes.
 * Every command gets {@code --server} and {@code --token-file} flags, so the environment of the test run does
 * not matter (flags come first).
 */
class OnlineCommandsTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    private static final String WEB1 = """
        {"name": "web1", "id": "6f1c1d2e-0000-4000-8000-000000000001", "kind": "file", "size": 21474836480,
         "allocatedBytes": 1048576, "state": "serving", "readOnly": false, "description": "web server",
         "created": "2026-01-02T03:04:05.123Z", "path": "/var/lib/nbdtail/volumes/web1/data.raw",
         "layers": [{"name": "base", "kind": "file"}],
         "clients": [{"id": "c7", "address": "10.1.2.3:50123", "since": "2026-01-02T04:00:00.5Z",
                      "bytesRead": 3145728, "bytesWritten": 1024, "requests": 42, "inFlight": 1}],
         "acl": {"allow": ["10.1.0.0/16", "192.0.2.7/32"], "effectiveDefault": "deny"}}""";
    private static final String DB1 = """
        {"name": "db1", "id": "6f1c1d2e-0000-4000-8000-000000000002", "kind": "device", "size": 1610612736,
         "allocatedBytes": 1610612736, "state": "read-only", "readOnly": true, "description": "",
         "created": "2026-01-02T03:04:05Z", "path": "/dev/sdb", "layers": [{"name": "base", "kind": "device"}],
         "clients": [], "acl": {"allow": null, "effectiveDefault": "allow"}}""";
    private static final String STATUS = """
        {"version": "0.1.0", "uptimeSeconds": 3725, "dataDir": "/var/lib/nbdtail", "dataDirFreeBytes": 53687091200,
         "volumeCount": 2, "connectionCount": 1, "health": "ok", "failedVolumes": []}""";

    @TempDir
    Path tmp;

    private FakeApi api;
    private Path tokenFile;

    @BeforeEach
    void setUp() throws Exception {
        api = new FakeApi();
        tokenFile = tmp.resolve("api-token");
        Files.writeString(tokenFile, FakeApi.TOKEN + "\n");
    }

    @AfterEach
    void tearDown() {
        api.close();
    }

    private record Result(int exitCode, String out, String err) {
    }

    private static Result run(final String... args) {
        final StringWriter out = new StringWriter();
        final StringWriter err = new StringWriter();
        final CommandLine commandLine = Main.commandLine();
        commandLine.setOut(new PrintWriter(out, true));
        commandLine.setErr(new PrintWriter(err, true));
        final int exitCode = commandLine.execute(args);
        return new Result(exitCode, out.toString(), err.toString());
    }

    /** {@code args} against the fake, with its URL and a token file. */
    private Result online(final String... args) {
        final List<String> all = new ArrayList<>(Arrays.asList(args));
        all.addAll(List.of("--server", api.url(), "--token-file", tokenFile.toString()));
        return run(all.toArray(String[]::new));
    }

    private static Result ok(final Result result) {
        assertThat(result.exitCode()).as("exit code; stderr: %s", result.err()).isZero();
        assertThat(result.err()).isEmpty();
        return result;
    }

    private static Result failed(final Result result) {
        assertThat(result.exitCode()).as("exit code; stdout: %s", result.out()).isEqualTo(1);
        assertThat(result.err()).startsWith("nbdtail: ").doesNotContain("unexpected error");
        return result;
    }

    // ------------------------------------------------------------------------------------------------ status

    @Test
    void shouldShowStatusAsLinesOrAsTheApisJson() throws Exception {
        api.on("GET", "/v1/status", 200, STATUS);
        assertThat(ok(online("status")).out()).isEqualTo("""
            server:      %s
            health:      ok
            version:     0.1.0
            uptime:      1h02m
            data dir:    /var/lib/nbdtail (50 GiB free)
            volumes:     2
            connections: 1
            """.formatted(api.url()));
        assertThat(JSON.readTree(ok(online("status", "--json")).out())).isEqualTo(JSON.readTree(STATUS));
    }

    @Test
    void shouldNameFailedVolumesInTheStatus() {
        api.on("GET", "/v1/status", 200, STATUS.replace("\"ok\"", "\"degraded\"").replace("\"failedVolumes\": []",
            "\"failedVolumes\": [\"db1\"]"));
        assertThat(ok(online("status")).out()).contains("health:      degraded")
            .contains("failed:      db1 (see nbdtail volume info NAME)");
    }

    // ------------------------------------------------------------------------------------------------ volumes

    @Test
    void shouldListVolumesAsATableOrAsTheApisJson() throws Exception {
        api.on("GET", "/v1/volumes", 200, "[" + DB1 + ", " + WEB1 + "]");
        assertThat(ok(online("volume", "list")).out()).isEqualTo("""
            NAME  SIZE     ALLOCATED  KIND    READ-ONLY  STATE      CLIENTS  DESCRIPTION
            db1   1.5 GiB  1.5 GiB    device  yes        read-only  0
            web1  20 GiB   1 MiB      file    no         serving    1        web server
            """);
        final JsonNode json = JSON.readTree(ok(online("volume", "list", "--json")).out());
        assertThat(json).isEqualTo(JSON.readTree("[" + DB1 + ", " + WEB1 + "]"));
    }

    @Test
    void shouldSayHowToCreateAVolumeWhenThereIsNone() {
        api.on("GET", "/v1/volumes", 200, "[]");
        assertThat(ok(online("volume", "list")).out()).isEqualTo("no volumes on the server at " + api.url()
            + "; create one with: nbdtail volume create NAME --size 20G\n");
    }

    @Test
    void shouldShowOneVolumeWithItsClientsAndAccessList() throws Exception {
        api.on("GET", "/v1/volumes/web1", 200, WEB1);
        assertThat(ok(online("volume", "info", "web1")).out()).isEqualTo("""
            name:        web1
            id:          6f1c1d2e-0000-4000-8000-000000000001
            kind:        file
            state:       serving
            size:        21474836480 bytes (20 GiB)
            allocated:   1048576 bytes (1 MiB)
            path:        /var/lib/nbdtail/volumes/web1/data.raw
            read-only:   no
            description: web server
            created:     2026-01-02T03:04:05.123Z
            layers:      base (file)
            acl:         10.1.0.0/16, 192.0.2.7/32
            clients:     1

            ID  ADDRESS         SINCE                 READ   WRITTEN  REQUESTS  IN-FLIGHT
            c7  10.1.2.3:50123  2026-01-02T04:00:00Z  3 MiB  1 KiB    42        1
            """);
        assertThat(JSON.readTree(ok(online("volume", "info", "web1", "--json")).out()))
            .isEqualTo(JSON.readTree(WEB1));

        api.on("GET", "/v1/volumes/db1", 200, DB1);
        assertThat(ok(online("volume", "info", "db1")).out()).contains("acl:         server default (allow"
            + " everyone)\n").endsWith("clients:     none\n");
    }

    @Test
    void shouldCreateAVolumeThroughTheApi() throws Exception {
        api.on("POST", "/v1/volumes", 201, WEB1);
        assertThat(ok(online("volume", "create", "web1", "--size", "20G", "--description", "web server")).out())
            .isEqualTo("created volume web1: 20 GiB file\n");
        assertThat(JSON.readTree(api.last("POST", "/v1/volumes").body())).isEqualTo(JSON.readTree("""
            {"name": "web1", "size": 21474836480, "description": "web server"}"""));

        api.replace("POST", "/v1/volumes", 201, DB1);
        assertThat(ok(online("volume", "create", "db1", "--device", "/dev/sdb", "--read-only")).out())
            .isEqualTo("created volume db1: 1.5 GiB device, read-only on /dev/sdb\n");
        assertThat(JSON.readTree(api.last("POST", "/v1/volumes").body())).isEqualTo(JSON.readTree("""
            {"name": "db1", "devicePath": "/dev/sdb", "readOnly": true}"""));
    }

    @Test
    void shouldFailWithTheApisMessageForAMissingVolume() {
        api.on("GET", "/v1/volumes/nope", 404, """
            {"error": "volume_not_found", "message": "volume 'nope' not found; list the volumes"}""");
        final Result result = failed(online("volume", "info", "nope"));
        assertThat(result.err()).isEqualTo("nbdtail: volume 'nope' not found; list the volumes\n");
        assertThat(result.out()).isEmpty();
    }

    @Test
    void shouldRefuseToDeleteAVolumeInUseWithoutForce() {
        api.on("DELETE", "/v1/volumes/web1", 409, """
            {"error": "volume_busy", "message": "volume 'web1' has 1 connected client(s); disconnect them first or\
             delete with force=true"}""");
        api.on("DELETE", "/v1/volumes/web1", 204, "");
        final Result refused = failed(online("volume", "delete", "web1"));
        assertThat(refused.err()).isEqualTo("nbdtail: volume 'web1' has 1 connected client(s); disconnect them first"
            + " or delete with force=true; to disconnect them and delete anyway: nbdtail volume delete web1"
            + " --force\n");
        assertThat(api.last("DELETE", "/v1/volumes/web1").query()).isNull();

        assertThat(ok(online("volume", "delete", "web1", "--force")).out()).startsWith("deleted volume web1");
        assertThat(api.last("DELETE", "/v1/volumes/web1").query()).isEqualTo("force=true");
    }

    @Test
    void shouldGrowAVolumeAndSayWhenClientsSeeIt() throws Exception {
        api.on("POST", "/v1/volumes/web1/grow", 200, WEB1.replace("21474836480", "32212254720"));
        assertThat(ok(online("volume", "grow", "web1", "--size", "30G")).out()).isEqualTo("grew volume web1 to"
            + " 30 GiB; its 1 connected client(s) see the new size once they reconnect\n");
        assertThat(JSON.readTree(api.last("POST", "/v1/volumes/web1/grow").body()))
            .isEqualTo(JSON.readTree("{\"size\": 32212254720}"));
    }

    @Test
    void shouldStillWorkOfflineWithADataDirectory() {
        final Path data = tmp.resolve("data");
        assertThat(ok(run("volume", "list", "--data-dir", data.toString())).out()).startsWith("no volumes in "
            + data);
        assertThat(api.requests()).isEmpty();
    }

    // ------------------------------------------------------------------------------------------------ clients, acl

    @Test
    void shouldListAndKickClients() throws Exception {
        final String clients = JSON.readTree(WEB1).get("clients").toString();
        api.on("GET", "/v1/volumes/web1/clients", 200, clients);
        assertThat(ok(online("clients", "list", "web1")).out()).isEqualTo("""
            ID  ADDRESS         SINCE                 READ   WRITTEN  REQUESTS  IN-FLIGHT
            c7  10.1.2.3:50123  2026-01-02T04:00:00Z  3 MiB  1 KiB    42        1
            """);
        assertThat(JSON.readTree(ok(online("clients", "list", "web1", "--json")).out()))
            .isEqualTo(JSON.readTree(clients));
        api.on("GET", "/v1/volumes/db1/clients", 200, "[]");
        assertThat(ok(online("clients", "list", "db1")).out()).isEqualTo("no clients connected to volume db1\n");

        api.on("DELETE", "/v1/volumes/web1/clients/c7", 204, "");
        assertThat(ok(online("clients", "kick", "web1", "c7")).out())
            .isEqualTo("disconnected client c7 from volume web1\n");
        api.on("DELETE", "/v1/volumes/web1/clients/c8", 404, """
            {"error": "client_not_found", "message": "no client 'c8' on volume 'web1'"}""");
        assertThat(failed(online("clients", "kick", "web1", "c8")).err())
            .isEqualTo("nbdtail: no client 'c8' on volume 'web1'; see the connected ones with: nbdtail clients list"
                + " web1\n");
    }

    @Test
    void shouldGetAndSetAccessLists() throws Exception {
        api.on("GET", "/v1/volumes/web1/acl", 200, """
            {"allow": ["10.1.0.0/16"], "effectiveDefault": "deny"}""");
        assertThat(ok(online("acl", "get", "web1")).out()).isEqualTo("volume web1 allows: 10.1.0.0/16\n");
        assertThat(JSON.readTree(ok(online("acl", "get", "web1", "--json")).out()).get("allow").get(0).asText())
            .isEqualTo("10.1.0.0/16");

        api.on("PUT", "/v1/volumes/web1/acl", 200, """
            {"allow": ["10.9.0.0/16", "127.0.0.1/32"], "effectiveDefault": "allow"}""");
        assertThat(ok(online("acl", "set", "web1", "10.9.0.0/16", "127.0.0.1")).out())
            .isEqualTo("volume web1 allows: 10.9.0.0/16, 127.0.0.1/32\n");
        assertThat(JSON.readTree(api.last("PUT", "/v1/volumes/web1/acl").body()))
            .isEqualTo(JSON.readTree("{\"allow\": [\"10.9.0.0/16\", \"127.0.0.1\"]}"));

        ok(online("acl", "set", "web1", "--default"));
        assertThat(JSON.readTree(api.last("PUT", "/v1/volumes/web1/acl").body()))
            .isEqualTo(JSON.readTree("{\"allow\": null}"));
        ok(online("acl", "set", "web1", "--none"));
        assertThat(JSON.readTree(api.last("PUT", "/v1/volumes/web1/acl").body()))
            .isEqualTo(JSON.readTree("{\"allow\": []}"));
    }

    @Test
    void shouldDescribeTheDefaultAndEmptyAccessLists() {
        api.on("GET", "/v1/volumes/a/acl", 200, "{\"allow\": null, \"effectiveDefault\": \"deny\"}");
        api.on("GET", "/v1/volumes/b/acl", 200, "{\"allow\": [], \"effectiveDefault\": \"allow\"}");
        assertThat(ok(online("acl", "get", "a")).out())
            .isEqualTo("volume a allows: server default (deny everyone)\n");
        assertThat(ok(online("acl", "get", "b")).out()).isEqualTo("volume b allows: nobody (empty list)\n");
    }

    @Test
    void shouldFailWithTheApisMessageForAnInvalidNetwork() {
        api.on("PUT", "/v1/volumes/web1/acl", 422, """
            {"error": "invalid_value", "message": "invalid network 'not-a-network': use an address or CIDR block"}""");
        assertThat(failed(online("acl", "set", "web1", "not-a-network")).err()).contains("not-a-network");
    }

    // ------------------------------------------------------------------------------------------------ operations

    private static String operation(final String state, final double progress, final long done, final String error) {
        return """
            {"id": "op1", "kind": "scrub", "volume": "vol1", "state": "%s", "progress": %s, "bytesDone": %d,
             "bytesTotal": 1073741824, "bytesPerSecond": 89128960, "etaSeconds": %s, "error": %s,
             "started": "2026-01-02T03:04:05Z", "finished": %s}""".formatted(state, progress, done,
            state.equals("running") ? "6" : "null", error == null ? "null" : "\"" + error + "\"",
            state.equals("running") ? "null" : "\"2026-01-02T03:04:17Z\"");
    }

    @Test
    void shouldWaitForAScrubWithPlainProgressLines() throws Exception {
        api.on("POST", "/v1/volumes/vol1/scrub", 202, operation("running", 0, 0, null));
        api.on("GET", "/v1/operations/op1", 200, operation("running", 0.5, 536870912, null));
        api.on("GET", "/v1/operations/op1", 200, operation("succeeded", 1, 1073741824, null));
        final Result result = ok(online("volume", "scrub", "vol1", "--rate", "16M/s", "--wait"));
        assertThat(result.out()).startsWith("scrub vol1: 0% 0 B/1 GiB 85 MiB/s eta 6s\n")
            .contains("scrub vol1: 100% 1 GiB/1 GiB 85 MiB/s\n")
            .endsWith("scrub vol1 (operation op1) succeeded in 12s\n")
            .doesNotContain("\r");
        assertThat(JSON.readTree(api.last("POST", "/v1/volumes/vol1/scrub").body()))
            .isEqualTo(JSON.readTree("{\"bytesPerSecond\": 16777216}"));
        assertThat(api.requests().stream().filter(r -> r.path().equals("/v1/operations/op1")).count())
            .isEqualTo(2);
    }

    @Test
    void shouldExitOneWithTheErrorWhenTheOperationFails() throws Exception {
        api.on("POST", "/v1/volumes/vol1/scrub", 202, operation("running", 0, 0, null));
        api.on("GET", "/v1/operations/op1", 200, operation("failed", 0.25, 268435456,
            "read error at offset 268435456: Input/output error"));
        final Result result = online("volume", "scrub", "vol1", "--wait");
        assertThat(result.exitCode()).isEqualTo(1);
        assertThat(result.out()).contains("scrub vol1: 25% 256 MiB/1 GiB 85 MiB/s failed\n");
        assertThat(result.err()).isEqualTo("nbdtail: scrub vol1 (operation op1) failed: read error at offset"
            + " 268435456: Input/output error\n");
        assertThat(JSON.readTree(api.last("POST", "/v1/volumes/vol1/scrub").body()).isEmpty()).isTrue();
    }

    @Test
    void shouldExitOneWhenTheOperationIsCancelledWhileWaiting() {
        api.on("GET", "/v1/operations/op1", 200, operation("running", 0.1, 107374182, null));
        api.on("GET", "/v1/operations/op1", 200, operation("cancelled", 0.1, 107374182, null));
        final Result result = online("operation", "get", "op1", "--wait");
        assertThat(result.exitCode()).isEqualTo(1);
        assertThat(result.err()).isEqualTo("nbdtail: scrub vol1 (operation op1) was cancelled\n");
    }

    @Test
    void shouldStartAScrubWithoutWaiting() throws Exception {
        api.on("POST", "/v1/volumes/vol1/scrub", 202, operation("running", 0, 0, null));
        assertThat(ok(online("volume", "scrub", "vol1")).out()).isEqualTo("started scrub of volume vol1: operation"
            + " op1; follow it with: nbdtail operation get op1 --wait\n");
        assertThat(JSON.readTree(ok(online("volume", "scrub", "vol1", "--json")).out()))
            .isEqualTo(JSON.readTree(operation("running", 0, 0, null)));
    }

    @Test
    void shouldWaitQuietlyAndPrintTheFinalJsonWithJson() throws Exception {
        api.on("GET", "/v1/operations/op1", 200, operation("running", 0.5, 536870912, null));
        api.on("GET", "/v1/operations/op1", 200, operation("succeeded", 1, 1073741824, null));
        final Result result = ok(online("operation", "get", "op1", "--wait", "--json"));
        assertThat(JSON.readTree(result.out())).isEqualTo(JSON.readTree(operation("succeeded", 1, 1073741824,
            null)));
    }

    @Test
    void shouldListShowAndCancelOperations() throws Exception {
        final String list = "[" + operation("running", 0.42, 450887680, null) + ", "
            + operation("failed", 0.25, 268435456, "read error").replace("op1", "op0") + "]";
        api.on("GET", "/v1/operations", 200, list);
        assertThat(ok(online("operation", "list")).out()).isEqualTo("""
            ID   KIND   VOLUME  STATE    PROGRESS                           STARTED               FINISHED
            op1  scrub  vol1    running  42% 430 MiB/1 GiB 85 MiB/s eta 6s  2026-01-02T03:04:05Z  -
            op0  scrub  vol1    failed   25% 256 MiB/1 GiB 85 MiB/s failed  2026-01-02T03:04:05Z  2026-01-02T03:04:17Z
            """);
        assertThat(JSON.readTree(ok(online("operation", "list", "--json")).out())).isEqualTo(JSON.readTree(list));

        api.on("GET", "/v1/operations/op0", 200, operation("failed", 0.25, 268435456, "read error")
            .replace("op1", "op0"));
        assertThat(ok(online("operation", "get", "op0")).out()).isEqualTo("""
            id:       op0
            kind:     scrub
            volume:   vol1
            state:    failed
            progress: 25% 256 MiB/1 GiB 85 MiB/s failed
            started:  2026-01-02T03:04:05Z
            finished: 2026-01-02T03:04:17Z
            error:    read error
            """);

        api.on("DELETE", "/v1/operations/op1", 200, operation("cancelled", 0.42, 450887680, null));
        assertThat(ok(online("operation", "cancel", "op1")).out())
            .isEqualTo("operation op1 (scrub vol1) is cancelled\n");
        api.on("DELETE", "/v1/operations/op2", 200, operation("succeeded", 1, 1073741824, null)
            .replace("op1", "op2"));
        assertThat(ok(online("operation", "cancel", "op2")).out())
            .isEqualTo("operation op2 (scrub vol1) was already over (succeeded); nothing to cancel\n");
        api.on("GET", "/v1/operations/op9", 404, """
            {"error": "operation_not_found", "message": "no operation 'op9'"}""");
        assertThat(failed(online("operation", "get", "op9")).err())
            .isEqualTo("nbdtail: no operation 'op9'; see the operations with: nbdtail operation list\n");
    }

    // ------------------------------------------------------------------------------------------------ failures

    @Test
    void shouldSayTheServerCannotBeReachedWhenNothingListens() throws Exception {
        final int port;
        try (ServerSocket socket = new ServerSocket(0)) {
            port = socket.getLocalPort();
        }
        final Result result = failed(run("status", "--server", "http://127.0.0.1:" + port, "--token", "x"));
        assertThat(result.err()).isEqualTo("nbdtail: cannot reach the nbdtail API at http://127.0.0.1:" + port
            + ": connection refused; is the server running with --api-listen?\n");
    }

    @Test
    void shouldSayTheTokenIsWrongOn401() {
        api.on("GET", "/v1/status", 200, STATUS);
        final Result result = failed(run("status", "--server", api.url(), "--token", "wrong"));
        assertThat(result.err()).startsWith("nbdtail: missing or wrong bearer token; check --token or --token-file");
    }

    @Test
    void shouldSayWhereTheTokenShouldBeWhenTheTokenFileIsMissing() {
        final Path missing = tmp.resolve("no-such-token");
        final Result result = failed(run("status", "--server", api.url(), "--token-file", missing.toString()));
        assertThat(result.err()).isEqualTo("nbdtail: no API token: pass --token-file or set NBDTAIL_TOKEN_FILE (the"
            + " server writes DATA/api-token on first start); " + missing + " (--token-file) does not exist\n");
        assertThat(api.requests()).isEmpty();
    }

    @Test
    void shouldExplainAnAnswerThatIsNotTheApis() {
        api.on("GET", "/v1/status", 502, "<html>Bad Gateway</html>");
        assertThat(failed(online("status")).err()).isEqualTo("nbdtail: the server at " + api.url() + " answered GET"
            + " /v1/status with HTTP 502 (<html>Bad Gateway</html>); check that --server is the nbdtail control API's"
            + " address and see the server log\n");
    }

    @ParameterizedTest
    @ValueSource(strings = {"volume grow web1", "volume scrub", "acl set web1", "acl set web1 10.0.0.0/8 --none",
        "acl set web1 --default --none", "clients kick web1", "operation get", "volume grow web1 --size 1X",
        "volume scrub web1 --rate fast", "volume create web1", "status --bogus"})
    void shouldExitTwoOnBadUsage(final String args) {
        final Result result = online(args.split(" "));
        assertThat(result.exitCode()).as(result.err()).isEqualTo(2);
        assertThat(result.err()).contains("Usage: nbdtail");
        assertThat(api.requests()).isEmpty();
    }

    @Test
    void shouldRefuseADataDirectoryTogetherWithAServer() {
        final Result result = online("volume", "list", "--data-dir", tmp.toString());
        assertThat(result.exitCode()).isEqualTo(2);
        assertThat(result.err()).startsWith("--data-dir works on a data directory directly, while --server");
    }

    // ------------------------------------------------------------------------------------------------ config

    @Test
    void shouldTakeTheServerAndTokenFileFromTheCliConfig() throws Exception {
        api.on("GET", "/v1/status", 200, STATUS);
        Files.createDirectories(tmp.resolve("conf"));
        Files.writeString(tmp.resolve("conf/token"), FakeApi.TOKEN);
        final Path config = tmp.resolve("conf/cli.json");
        Files.writeString(config, "{\"server\": \"" + api.url() + "/\", \"tokenFile\": \"token\"}");
        assertThat(ok(run("status", "--cli-config", config.toString())).out()).contains("health:      ok");

        // Flags beat the config file.
        Files.writeString(config, "{\"server\": \"http://127.0.0.1:1\", \"tokenFile\": \"missing\"}");
        assertThat(ok(run("status", "--cli-config", config.toString(), "--server", api.url(), "--token-file",
            tokenFile.toString())).out()).contains("health:      ok");
    }

    @Test
    void shouldRejectAMistypedCliConfig() throws Exception {
        final Path config = tmp.resolve("cli.json");
        Files.writeString(config, "{\"server\": \"" + api.url() + "\", \"token_file\": \"x\"}");
        assertThat(failed(run("status", "--cli-config", config.toString())).err()).isEqualTo("nbdtail: unknown key"
            + " 'token_file' in the CLI config file " + config + "; the keys are server and tokenFile\n");
        assertThat(failed(run("status", "--cli-config", tmp.resolve("nope.json").toString())).err())
            .startsWith("nbdtail: CLI config file " + tmp.resolve("nope.json") + " (from --cli-config) does not"
                + " exist");
    }

    // ------------------------------------------------------------------------------------------------ completion

    @Test
    void shouldPrintABashCompletionScript() {
        final String script = ok(run("completion")).out();
        assertThat(script).contains("complete -F").contains("scrub").contains("--token-file");
    }
}
