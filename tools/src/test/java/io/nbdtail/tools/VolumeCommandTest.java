package io.nbdtail.tools;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.nbdtail.volume.VolumeService;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import picocli.CommandLine;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

/** The command line in-process, with its output captured: what an operator types and what they read back. */
class VolumeCommandTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path tmp;

    private Path data;

    @BeforeEach
    void setUp() {
        data = tmp.resolve("data");
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

    /** {@code args} followed by {@code --data-dir DATA}. */
    private Result volume(final String... args) {
        final List<String> all = new ArrayList<>(List.of("volume"));
        all.addAll(Arrays.asList(args));
        all.addAll(List.of("--data-dir", data.toString()));
        return run(all.toArray(String[]::new));
    }

    private static Result ok(final Result result) {
        assertThat(result.exitCode()).as("exit code; stderr: %s", result.err()).isZero();
        assertThat(result.err()).isEmpty();
        return result;
    }

    @Test
    void shouldCreateListInspectAndDeleteVolumes() throws Exception {
        assertThat(ok(volume("create", "web1", "--size", "20G", "--description", "web server")).out())
            .isEqualTo("created volume web1: 20 GiB file\n");
        assertThat(ok(volume("create", "db1", "--size", "1536M", "--read-only")).out())
            .isEqualTo("created volume db1: 1.5 GiB file, read-only\n");
        assertThat(Files.size(data.resolve("volumes/web1/data.raw"))).isEqualTo(20L << 30);

        assertThat(ok(volume("list")).out()).isEqualTo("""
            NAME  SIZE     ALLOCATED  KIND  READ-ONLY  DESCRIPTION
            db1   1.5 GiB  0 B        file  yes
            web1  20 GiB   0 B        file  no         web server
            """);

        final String info = ok(volume("info", "web1")).out();
        final String id = JSON.readTree(Files.readString(data.resolve("volumes/web1/volume.json"))).get("id")
            .asText();
        assertThat(info).startsWith("name:        web1\nid:          " + id + "\nkind:        file\n")
            .contains("size:        21474836480 bytes (20 GiB)\n")
            .contains("allocated:   0 bytes (0 B)\n")
            .contains("path:        " + data.resolve("volumes/web1/data.raw").toAbsolutePath() + "\n")
            .contains("read-only:   no\n")
            .contains("description: web server\n")
            .containsPattern("created:     \\d{4}-\\d\\d-\\d\\dT[0-9:.]+Z\n")
            .endsWith("in use:      no\n");

        assertThat(ok(volume("delete", "web1")).out()).isEqualTo("deleted volume web1\n");
        assertThat(data.resolve("volumes/web1")).doesNotExist();
        assertThat(ok(volume("list")).out()).contains("db1").doesNotContain("web1");
    }

    @Test
    void shouldPrintJsonForScripts() throws Exception {
        ok(volume("create", "web1", "--size", "64M", "--description", "web \"server\""));
        ok(volume("create", "db1", "--size", "1G", "--read-only"));

        final JsonNode list = JSON.readTree(ok(volume("list", "--json")).out());
        assertThat(list.isArray()).isTrue();
        assertThat(list).hasSize(2);
        assertThat(list.get(0).get("name").asText()).isEqualTo("db1");
        final JsonNode web = list.get(1);
        assertThat(web.get("name").asText()).isEqualTo("web1");
        assertThat(web.get("kind").asText()).isEqualTo("FILE");
        assertThat(web.get("size").asLong()).isEqualTo(64L << 20);
        assertThat(web.get("allocated").asLong()).isZero();
        assertThat(web.get("readOnly").asBoolean()).isFalse();
        assertThat(web.get("description").asText()).isEqualTo("web \"server\"");
        assertThat(web.get("devicePath").isNull()).isTrue();
        assertThat(web.get("inUse").asBoolean()).isFalse();
        assertThat(web.get("path").asText()).isEqualTo(data.resolve("volumes/web1/data.raw").toAbsolutePath()
            .toString());
        assertThat(web.get("id").asText()).matches("[0-9a-f-]{36}");
        assertThat(web.get("created").asText()).endsWith("Z");

        final JsonNode info = JSON.readTree(ok(volume("info", "db1", "--json")).out());
        assertThat(info.isObject()).isTrue();
        assertThat(info.get("name").asText()).isEqualTo("db1");
        assertThat(info.get("readOnly").asBoolean()).isTrue();
        assertThat(info.get("size").asLong()).isEqualTo(1L << 30);
        assertThat(info).isEqualTo(list.get(0));
    }

    @Test
    void shouldSayWhenThereAreNoVolumes() throws Exception {
        assertThat(ok(volume("list")).out()).startsWith("no volumes in " + data.toAbsolutePath())
            .contains("nbdtail volume create NAME --size 20G");
        assertThat(JSON.readTree(ok(volume("list", "--json")).out())).isEmpty();
    }

    @Test
    void shouldNameAMissingVolumeAndSayWhatToDo() {
        final Result result = volume("info", "ghost");
        assertThat(result.exitCode()).isEqualTo(1);
        assertThat(result.out()).isEmpty();
        assertThat(result.err()).isEqualTo("nbdtail: volume 'ghost' not found in " + data.toAbsolutePath()
            + "; check the name with 'nbdtail volume list --data-dir " + data.toAbsolutePath() + "'\n");
        assertThat(volume("delete", "ghost").err()).contains("volume 'ghost' not found");
    }

    @Test
    void shouldFailWithExitCodeOneAndOneLineOnStderr() {
        ok(volume("create", "web1", "--size", "1M"));
        final Result duplicate = volume("create", "web1", "--size", "1M");
        assertThat(duplicate.exitCode()).isEqualTo(1);
        assertThat(duplicate.err()).startsWith("nbdtail: volume 'web1' already exists").doesNotContain("\tat ")
            .hasLineCount(1);

        final Result oddSize = volume("create", "odd", "--size", "1000");
        assertThat(oddSize.exitCode()).isEqualTo(1);
        assertThat(oddSize.err()).isEqualTo("nbdtail: invalid volume size 1000: it must be a multiple of 512 bytes,"
            + " for example 1024\n");

        final Result badName = volume("create", "a@b", "--size", "1M");
        assertThat(badName.exitCode()).isEqualTo(1);
        assertThat(badName.err()).contains("'@' is reserved for snapshot exports");

        final Result notDevice = volume("create", "dev", "--device", tmp.toString());
        assertThat(notDevice.exitCode()).isEqualTo(1);
        assertThat(notDevice.err()).contains("is a directory, not a block device");
    }

    @Test
    void shouldRefuseChangesWhileAServerHoldsTheDataDirectory() throws Exception {
        ok(volume("create", "web1", "--size", "1M"));
        try (AutoCloseable server = VolumeService.open(data).lockDataDirectory()) {
            for (final Result refused : List.of(volume("create", "web2", "--size", "1M"), volume("delete", "web1"))) {
                assertThat(refused.exitCode()).isEqualTo(1);
                assertThat(refused.err()).contains("is locked by nbdtail pid " + ProcessHandle.current().pid())
                    .contains("stop the server or use the server's control API");
            }
            assertThat(volume("create", "web2", "--size", "1M").err()).startsWith("nbdtail: cannot create volume"
                + " 'web2': data directory " + data.toAbsolutePath());
            // Reading works under a live server.
            assertThat(ok(volume("list")).out()).contains("web1");
            ok(volume("info", "web1"));
        }
        assertThat(data.resolve("volumes/web2")).doesNotExist();
        ok(volume("delete", "web1"));
    }

    @Test
    void shouldReportAVolumeInUse() throws Exception {
        ok(volume("create", "busy", "--size", "1M"));
        try (var open = VolumeService.open(data).openVolume("busy", Runnable::run)) {
            assertThat(ok(volume("info", "busy")).out()).contains("in use:      yes");
            assertThat(JSON.readTree(ok(volume("list", "--json")).out()).get(0).get("inUse").asBoolean()).isTrue();
            final Result refused = volume("delete", "busy");
            assertThat(refused.exitCode()).isEqualTo(1);
            assertThat(refused.err()).contains("volume 'busy' is in use");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"", "volume", "bogus", "volume bogus", "volume create", "volume create x",
        "volume create x --size 1M --device /dev/null", "volume create x --size 20X", "volume create x --size 1.5G",
        "volume list --frobnicate", "volume info", "serve --no-such-option"})
    void shouldExitWithTwoOnBadUsage(final String args) {
        final Result result = run(args.isEmpty() ? new String[0] : args.split(" "));
        assertThat(result.exitCode()).as("stderr: %s", result.err()).isEqualTo(2);
        assertThat(result.err()).isNotEmpty();
    }

    @Test
    void shouldExplainABadSize() {
        final Result result = volume("create", "x", "--size", "20X");
        assertThat(result.err()).contains("invalid size '20X': use a number of bytes or a number with K, M, G, T or"
            + " P (powers of 1024), e.g. 20G");
    }

    @Test
    void shouldPrintHelpAndVersion() {
        assertThat(ok(run("--help")).out()).contains("serve").contains("volume");
        assertThat(ok(run("volume", "create", "--help")).out()).contains("--size").contains("--device")
            .contains("--data-dir");
        assertThat(ok(run("--version")).out()).startsWith("nbdtail ");
    }
}
