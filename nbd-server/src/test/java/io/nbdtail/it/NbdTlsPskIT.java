package io.nbdtail.it;

import io.nbdtail.nbd.engine.NbdServerConfig;
import io.nbdtail.testing.ExternalTool;
import io.nbdtail.testing.TestServer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * NBD_OPT_STARTTLS with pre-shared keys ({@code identity:hexkey}, the format of GnuTLS's psktool) against qemu
 * ({@code tls-creds-psk}) and libnbd ({@code tls-psk-file}), over TLS 1.3 (what both pick) and TLS 1.2 (qemu with
 * its priority string limited to 1.2). vol-a is for alice only; shared for any client holding a key.
 */
class NbdTlsPskIT {
    private static final long SIZE = 16L << 20;

    @TempDir
    static Path dir;
    static TestServer server;
    static Path alice;
    static Path bob;
    static Path wrongKey;
    static Path stranger;

    @BeforeAll
    static void start() throws Exception {
        final String aliceLine = "alice:" + key();
        final String bobLine = "bob:" + key();
        final Path serverKeys = Files.write(dir.resolve("server.psk"), List.of(aliceLine, bobLine));
        // qemu wants DIR/keys.psk; libnbd takes the file.
        alice = keys("alice", aliceLine);
        bob = keys("bob", bobLine);
        wrongKey = keys("wrong", "alice:" + key());
        stranger = keys("stranger", "carol:" + key());

        final NbdServerConfig config = new NbdServerConfig();
        config.eventLoopThreads = 1;
        config.storageThreads = 2;
        config.tls.mode = "required";
        config.tls.pskFile = serverKeys.toString();
        config.tls.authorization = Map.of("vol-a", List.of("psk:alice"));
        server = TestServer.start(dir.resolve("data"), config);
        server.createVolume("vol-a", SIZE);
        server.createVolume("shared", SIZE);
    }

    private static String key() {
        final byte[] k = new byte[32];
        new SecureRandom().nextBytes(k);
        return HexFormat.of().formatHex(k);
    }

    private static Path keys(final String name, final String line) throws Exception {
        final Path d = Files.createDirectories(dir.resolve(name));
        Files.write(d.resolve("keys.psk"), List.of(line));
        return d;
    }

    @AfterAll
    static void stop() throws Exception {
        if (server != null) {
            server.close();
        }
    }

    private static String nbds(final String user, final Path keys, final String export) {
        return "nbds://" + user + "@127.0.0.1:" + server.port() + "/" + export + "?tls-psk-file="
            + keys.resolve("keys.psk");
    }

    private static List<String> qemu(final String tool, final String user, final Path keys, final String priority,
                                     final String export, final String... more) {
        final List<String> command = ExternalTool.args(tool);
        command.addAll(List.of(more));
        command.addAll(List.of("--object", "tls-creds-psk,id=tls0,endpoint=client,dir=" + keys + ",username=" + user
            + (priority == null ? "" : ",priority=" + priority), "--image-opts", "driver=nbd,host=127.0.0.1,port="
            + server.port() + ",export=" + export + ",tls-creds=tls0"));
        return command;
    }

    @Test
    void nbdinfoAndQemuWorkWithTheRightKey() {
        assertThat(ExternalTool.run("nbdinfo", "--json", nbds("alice", alice, "vol-a")).assertSuccess().stdout())
            .contains("\"export-size\": " + SIZE);
        final String out = ExternalTool.run(qemu("qemu-io", "alice", alice, null, "vol-a", "-c",
            "write -P 0x3c 0 2M", "-c", "read -P 0x3c 0 2M", "-c", "flush")).assertSuccess().output();
        assertThat(out).doesNotContain("Pattern verification failed");
        assertThat(ExternalTool.run("nbdinfo", "--list", nbds("bob", bob, "")).assertSuccess().stdout())
            .contains("export=\"shared\"").doesNotContain("vol-a");
    }

    @Test
    void tls12WorksToo() {
        // qemu's default priority plus the PSK key exchanges, without TLS 1.3.
        final String out = ExternalTool.run(qemu("qemu-io", "alice", alice, "NORMAL:-VERS-TLS1.3:+ECDHE-PSK:+DHE-PSK",
            "vol-a", "-c", "write -P 0x4d 2M 1M", "-c", "read -P 0x4d 2M 1M")).assertSuccess().output();
        assertThat(out).doesNotContain("Pattern verification failed");
    }

    @Test
    void anotherIdentityCannotTellWhetherTheVolumeExists() {
        final ExternalTool.Result refused = ExternalTool.run("nbdinfo", nbds("bob", bob, "vol-a"));
        final ExternalTool.Result missing = ExternalTool.run("nbdinfo", nbds("bob", bob, "no-such"));
        assertThat(refused.exitCode()).isNotZero();
        assertThat(refused.stderr().replace("vol-a", "NAME")).isEqualTo(missing.stderr().replace("no-such", "NAME"));
        final ExternalTool.Result q = ExternalTool.run(qemu("qemu-img", "bob", bob, null, "vol-a", "info"));
        final ExternalTool.Result q2 = ExternalTool.run(qemu("qemu-img", "bob", bob, null, "no-such", "info"));
        assertThat(q.exitCode()).isNotZero();
        assertThat(q.stderr().replace("vol-a", "NAME")).isEqualTo(q2.stderr().replace("no-such", "NAME"));
    }

    @Test
    void aWrongKeyOrAnUnknownIdentityFailsTheHandshake() {
        assertThat(ExternalTool.run("nbdinfo", nbds("alice", wrongKey, "vol-a")).exitCode()).isNotZero();
        assertThat(ExternalTool.run("nbdinfo", nbds("carol", stranger, "shared")).exitCode()).isNotZero();
        assertThat(ExternalTool.run(qemu("qemu-img", "alice", wrongKey, null, "vol-a", "info")).exitCode())
            .isNotZero();
        assertThat(ExternalTool.run(qemu("qemu-img", "alice", wrongKey, "NORMAL:-VERS-TLS1.3:+ECDHE-PSK:+DHE-PSK",
            "vol-a", "info")).exitCode()).isNotZero();
        // And without TLS nothing at all.
        assertThat(ExternalTool.run("nbdinfo", "nbd://127.0.0.1:" + server.port() + "/shared").exitCode())
            .isNotZero();
    }
}
