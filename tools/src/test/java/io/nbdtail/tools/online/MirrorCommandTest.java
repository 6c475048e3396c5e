package io.nbdtail.tools.online;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.nbdtail.tools.Main;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** {@code nbdtail mirror ...} against a fake control API. */
class MirrorCommandTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    private static String status(final String state, final long dirty, final String error) {
        return """
            {"volume": "vm1", "destination": "tail9:10809", "state": "%s", "pass": 2, "bytesTotal": 1073741824,
             "bytesCopied": 1073741824, "bytesDirty": %d, "rate": 104857600, "etaSeconds": 1, "rateLimit": 0,
             "attempts": 1, "lastError": %s, "convergence": "normal", "freezeMillis": %d, "epoch": 0,
             "started": "2026-01-02T03:04:05Z", "finished": null}"""
            .formatted(state, dirty, error == null ? "null" : "\"" + error + "\"", state.equals("moved") ? 42 : -1);
    }

    @TempDir
    Path tmp;
    private FakeApi api;
    private Path tokenFile;
    private Path secretFile;

    @BeforeEach
    void setUp() throws Exception {
        api = new FakeApi();
        tokenFile = tmp.resolve("api-token");
        Files.writeString(tokenFile, FakeApi.TOKEN + "\n");
        secretFile = tmp.resolve("secret");
        Files.writeString(secretFile, "a-secret-of-sixteen-chars\n");
    }

    @AfterEach
    void tearDown() {
        api.close();
    }

    private record Result(int exitCode, String out, String err) {
    }

    private Result online(final String... args) {
        final List<String> all = new ArrayList<>(Arrays.asList(args));
        all.addAll(List.of("--server", api.url(), "--token-file", tokenFile.toString()));
        final StringWriter out = new StringWriter();
        final StringWriter err = new StringWriter();
        final CommandLine commandLine = Main.commandLine();
        commandLine.setOut(new PrintWriter(out, true));
        commandLine.setErr(new PrintWriter(err, true));
        final int exitCode = commandLine.execute(all.toArray(String[]::new));
        return new Result(exitCode, out.toString(), err.toString());
    }

    @Test
    void startShouldSendTheDestinationTheSecretAndTheRate() throws Exception {
        api.on("POST", "/v1/volumes/vm1/mirror", 202, status("copying", 1 << 30, null));
        final Result r = online("mirror", "start", "vm1", "--to", "tail9:10809", "--secret-file",
            secretFile.toString(), "--rate", "200M");
        assertThat(r.exitCode()).as(r.err()).isZero();
        assertThat(r.out()).contains("nbdtail mirror status vm1 --wait");
        final JsonNode body = JSON.readTree(api.last("POST", "/v1/volumes/vm1/mirror").body());
        assertThat(body.path("destination").asText()).isEqualTo("tail9:10809");
        assertThat(body.path("token").asText()).isEqualTo("a-secret-of-sixteen-chars");
        assertThat(body.path("bytesPerSecond").asLong()).isEqualTo(200L << 20);
    }

    @Test
    void startShouldReportARefusalAndFail() {
        api.on("POST", "/v1/volumes/vm1/mirror", 409, """
            {"error": "mirror_refused", "message": "the destination refused: size mismatch"}""");
        final Result r = online("mirror", "start", "vm1", "--to", "tail9:10809", "--secret-file",
            secretFile.toString());
        assertThat(r.exitCode()).isEqualTo(1);
        assertThat(r.err()).contains("size mismatch");
    }

    @Test
    void statusWaitShouldFollowUntilMovedAndReportTheFreeze() {
        api.on("GET", "/v1/volumes/vm1/mirror", 200, status("copying", 1 << 20, null))
            .on("GET", "/v1/volumes/vm1/mirror", 200, status("cutover", 0, null))
            .on("GET", "/v1/volumes/vm1/mirror", 200, status("moved", 0, null));
        final Result r = online("mirror", "status", "vm1", "--wait");
        assertThat(r.exitCode()).as(r.err()).isZero();
        assertThat(r.out()).contains("mirror vm1: copying pass 2").contains("1 MiB dirty")
            .contains("moved to tail9:10809").contains("held for 42 ms");
    }

    @Test
    void statusWaitShouldFailWithTheLastErrorWhenTheMirrorFails() {
        api.on("GET", "/v1/volumes/vm1/mirror", 200, status("failed", 0, "cannot read vm1 at 4096"));
        final Result r = online("mirror", "status", "vm1", "--wait");
        assertThat(r.exitCode()).isEqualTo(1);
        assertThat(r.err()).contains("mirror of vm1 failed: cannot read vm1 at 4096");
    }

    @Test
    void receiveRateAbortAndResolveShouldCallTheirRoutes() throws Exception {
        api.on("POST", "/v1/volumes/vm1/receive", 201, "{\"name\": \"vm1\", \"state\": \"receiving\"}");
        api.on("PUT", "/v1/volumes/vm1/mirror/rate", 200, status("copying", 0, null));
        api.on("DELETE", "/v1/volumes/vm1/mirror", 200, status("aborted", 0, null));
        api.on("POST", "/v1/volumes/vm1/mirror/resolve", 200, "{\"name\": \"vm1\", \"state\": \"moved\"}");
        assertThat(online("mirror", "receive", "vm1", "--size", "1G", "--secret-file", secretFile.toString(),
            "--source", "10.0.0.5", "--source-identity", "dn:CN=tail-3,O=Storage").exitCode()).isZero();
        final JsonNode receive = JSON.readTree(api.last("POST", "/v1/volumes/vm1/receive").body());
        assertThat(receive.path("size").asLong()).isEqualTo(1L << 30);
        assertThat(receive.path("source").asText()).isEqualTo("10.0.0.5");
        assertThat(receive.path("sourceIdentity").asText()).isEqualTo("dn:CN=tail-3,O=Storage");
        assertThat(online("mirror", "rate", "vm1", "0").out()).contains("rate limit off");
        assertThat(online("mirror", "abort", "vm1").out()).contains("aborted");
        assertThat(online("mirror", "resolve", "vm1", "moved").out()).contains("vm1: moved");
        assertThat(JSON.readTree(api.last("POST", "/v1/volumes/vm1/mirror/resolve").body()).path("outcome")
            .asText()).isEqualTo("moved");
    }

    @Test
    void shouldShowHowManySnapshotLayersHaveArrived() throws Exception {
        final JsonNode status = JSON.readTree("{\"volume\":\"vm1\",\"state\":\"copying\",\"pass\":0,"
            + "\"snapshots\":4,\"snapshotsSealed\":2,\"bytesCopied\":0,\"bytesDirty\":0,\"rate\":0,"
            + "\"attempts\":0,\"convergence\":\"normal\",\"freezeMillis\":-1}");
        assertThat(MirrorCommand.line(status)).contains("snapshots 2/4");
        assertThat(MirrorCommand.line(JSON.readTree("{\"volume\":\"vm1\",\"state\":\"copying\",\"snapshots\":0}")))
            .doesNotContain("snapshots");
    }
}
