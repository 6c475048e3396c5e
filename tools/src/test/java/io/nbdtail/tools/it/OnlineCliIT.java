package io.nbdtail.tools.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.nbdtail.testing.ExternalTool;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** The real {@code nbdtail} command line against a running server, through its control API. */
class OnlineCliIT {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path dir;
    static ServerProcess server;
    static Path tokenFile;

    @BeforeAll
    static void start() throws Exception {
        server = ServerProcess.start(dir.resolve("data"), dir.resolve("server.log"));
        tokenFile = dir.resolve("data").resolve("api-token");
    }

    @AfterAll
    static void stop() throws Exception {
        if (server != null) {
            assertThat(server.terminate(60)).isZero();
            server.close();
        }
    }

    private static ExternalTool.Result nbdtail(final String... args) {
        final List<String> all = new ArrayList<>(Arrays.asList(args));
        all.addAll(List.of("--server", server.apiUrl(), "--token-file", tokenFile.toString()));
        return ServerProcess.cli(all.toArray(String[]::new));
    }

    @Test
    void shouldManageVolumesOnlineWithTablesJsonAndExitCodes() throws Exception {
        final ExternalTool.Result created = nbdtail("volume", "create", "cli1", "--size", "64M", "--description",
            "made by the CLI");
        assertThat(created.exitCode()).as(created.output()).isZero();
        ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 5 0 1M", server.uri("cli1")).assertSuccess();

        final ExternalTool.Result table = nbdtail("volume", "list");
        assertThat(table.exitCode()).as(table.output()).isZero();
        assertThat(table.stdout()).contains("NAME").contains("cli1").contains("64 MiB");

        final JsonNode list = JSON.readTree(nbdtail("volume", "list", "--json").assertSuccess().stdout());
        assertThat(list.get(0).get("name").asText()).isEqualTo("cli1");
        assertThat(list.get(0).get("allocatedBytes").asLong()).isGreaterThanOrEqualTo(1 << 20);

        final JsonNode info = JSON.readTree(nbdtail("volume", "info", "cli1", "--json").assertSuccess().stdout());
        assertThat(info.get("description").asText()).isEqualTo("made by the CLI");

        assertThat(nbdtail("volume", "grow", "cli1", "--size", "128M").exitCode()).isZero();
        assertThat(ExternalTool.run("nbdinfo", "--size", server.uri("cli1")).assertSuccess().stdout().trim())
            .isEqualTo(Long.toString(128L << 20));

        final ExternalTool.Result missing = nbdtail("volume", "info", "nope");
        assertThat(missing.exitCode()).isEqualTo(1);
        assertThat(missing.stderr()).contains("nope");

        final ExternalTool.Result usage = nbdtail("volume", "create");
        assertThat(usage.exitCode()).isEqualTo(2);

        final JsonNode status = JSON.readTree(nbdtail("status", "--json").assertSuccess().stdout());
        assertThat(status.get("health").asText()).isEqualTo("ok");
        assertThat(status.get("volumeCount").asInt()).isGreaterThanOrEqualTo(1);
        assertThat(nbdtail("status").assertSuccess().stdout()).contains("ok");

        assertThat(nbdtail("volume", "delete", "cli1").exitCode()).isZero();
        assertThat(nbdtail("volume", "info", "cli1").exitCode()).isEqualTo(1);
    }

    @Test
    void shouldSetAccessListsAndListClients() throws Exception {
        nbdtail("volume", "create", "cli2", "--size", "16M").assertSuccess();
        assertThat(nbdtail("acl", "set", "cli2", "10.9.0.0/16", "127.0.0.1").exitCode()).isZero();
        final JsonNode acl = JSON.readTree(nbdtail("acl", "get", "cli2", "--json").assertSuccess().stdout());
        assertThat(acl.get("allow").toString()).contains("10.9.0.0/16").contains("127.0.0.1/32");
        final ExternalTool.Result bad = nbdtail("acl", "set", "cli2", "not-a-network");
        assertThat(bad.exitCode()).isEqualTo(1);
        assertThat(bad.stderr()).contains("not-a-network");
        assertThat(JSON.readTree(nbdtail("clients", "list", "cli2", "--json").assertSuccess().stdout()).size())
            .isZero();
    }

    @Test
    void shouldWaitForALongOperationWithPlainProgressLines() throws Exception {
        nbdtail("volume", "create", "cli3", "--size", "32M").assertSuccess();
        final ExternalTool.Result scrub = nbdtail("volume", "scrub", "cli3", "--rate", "16777216", "--wait");
        assertThat(scrub.exitCode()).as(scrub.output()).isZero();
        assertThat(scrub.stdout()).contains("scrub").contains("cli3").contains("100%");
        final JsonNode ops = JSON.readTree(nbdtail("operation", "list", "--json").assertSuccess().stdout());
        assertThat(ops.get(0).get("state").asText()).isEqualTo("succeeded");
    }

    @Test
    void shouldFailClearlyWithoutAServerOrToken() {
        final ExternalTool.Result down = ServerProcess.cli("status", "--server", "http://127.0.0.1:1",
            "--token-file", tokenFile.toString());
        assertThat(down.exitCode()).isEqualTo(1);
        assertThat(down.stderr()).contains("cannot reach");
        final ExternalTool.Result wrong = ServerProcess.cli("status", "--server", server.apiUrl(), "--token",
            "wrong-token-wrong-token");
        assertThat(wrong.exitCode()).isEqualTo(1);
        assertThat(wrong.stderr().toLowerCase()).contains("token");
    }

    @Test
    void shouldPrintABashCompletionScript() {
        assertThat(ServerProcess.cli("completion").assertSuccess().stdout()).contains("complete -F");
    }
}
