package io.nbdtail.tools.it;

import io.nbdtail.testing.ExternalTool;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/** The daemon as a process: crashes, signals, locks and socket activation. */
class ServerLifecycleIT {
    @TempDir
    Path dir;

    private Path dataDir(final String... volumes) {
        final Path data = dir.resolve("data");
        for (final String v : volumes) {
            ServerProcess.cli("volume", "create", v, "--size", "64M", "--data-dir", data.toString()).assertSuccess();
        }
        return data;
    }

    @Test
    void shouldKeepFlushedAndFuaWritesAcrossKillNine() throws Exception {
        final Path data = dataDir("disk");
        final Path log = dir.resolve("server.log");
        try (ServerProcess server = ServerProcess.start(data, log)) {
            qemuIo(server.uri("disk"), "write -P 0x61 0 1M", "write -P 0x62 4M 64k", "flush",
                "write -f -P 0x63 8M 4k");
            server.kill9();
        }
        try (ServerProcess server = ServerProcess.start(data, log)) {
            qemuIo(server.uri("disk"), "read -P 0x61 0 1M", "read -P 0x62 4M 64k", "read -P 0x63 8M 4k",
                "read -P 0 1M 3M");
            assertThat(server.terminate(60)).isZero();
        }
    }

    @Test
    void shouldExitZeroOnSigtermWithRequestsInFlightAndKeepAckedWrites() throws Exception {
        final Path data = dataDir("busy");
        final Path log = dir.resolve("server.log");
        try (ServerProcess server = ServerProcess.start(data, log)) {
            final Process fio = new ProcessBuilder("fio", "--name=load", "--ioengine=nbd", "--uri=" + server.uri("busy"),
                "--rw=randwrite", "--bs=64k", "--iodepth=16", "--size=32m", "--time_based", "--runtime=30")
                .redirectErrorStream(true).redirectOutput(dir.resolve("fio.log").toFile()).start();
            Thread.sleep(2000);
            assertThat(fio.isAlive()).as("fio still writing when SIGTERM is sent").isTrue();
            assertThat(server.terminate(60)).isZero();
            fio.waitFor();
            assertThat(server.logText()).contains("shutting down").contains("stopped");
        }
        // The data directory lock was released: a new server starts on it and serves the volume.
        try (ServerProcess server = ServerProcess.start(data, log)) {
            qemuIo(server.uri("busy"), "write -P 0x33 0 4k", "read -P 0x33 0 4k");
            assertThat(server.terminate(60)).isZero();
        }
    }

    @Test
    void shouldRefuseSecondServerOnTheSameDataDirectory() throws Exception {
        final Path data = dataDir("solo");
        try (ServerProcess first = ServerProcess.start(data, dir.resolve("first.log"))) {
            final Path log = dir.resolve("second.log");
            final int exit = ServerProcess.runToExit(data, log, ServerProcess.freePort());
            assertThat(exit).isEqualTo(1);
            assertThat(Files.readString(log)).contains("already served by another nbdtail process")
                .contains("pid " + first.pid());
            // The first server is unaffected.
            qemuIo(first.uri("solo"), "write -P 7 0 4k", "read -P 7 0 4k");
        }
    }

    @Test
    void shouldStartAfterACrashLeftItsLocksBehind() throws Exception {
        final Path data = dataDir("stale");
        final Path log = dir.resolve("server.log");
        try (ServerProcess server = ServerProcess.start(data, log)) {
            server.kill9();
        }
        assertThat(data.resolve("nbdtail.lock")).exists();
        try (ServerProcess server = ServerProcess.start(data, log)) {
            qemuIo(server.uri("stale"), "write -P 9 0 4k", "read -P 9 0 4k");
        }
    }

    @Test
    void shouldServeThroughSystemdSocketActivation() throws Exception {
        final Path data = dataDir("activated");
        // Through the real launcher, which must exec the JVM so that LISTEN_PID stays right; "--" keeps nbdinfo
        // from parsing the server's options as its own.
        final Path launcher = Path.of("..", "bin", "nbdtail").toAbsolutePath().normalize();
        final List<String> cmd = new ArrayList<>(List.of("nbdinfo", "--json", "--", "[", launcher.toString(),
            "serve", "--data-dir", data.toString(), "--api-listen", "off", "]"));
        // The only export is also the default one, so nbdinfo needs no export name.
        final ExternalTool.Result result = ExternalTool.run(Map.of(), 120, cmd.toArray(String[]::new))
            .assertSuccess();
        assertThat(result.stdout()).contains("\"export-name\": \"activated\"").contains("\"export-size\": " + (64L << 20))
            .contains("\"can_multi_conn\": true");
    }

    @Test
    void shouldServeAnInheritedTcpSocketAsASystemdSocketUnitWould() throws Exception {
        final Path data = dataDir("tcp");
        final int port = ServerProcess.freePort();
        final Path launcher = Path.of("..", "bin", "nbdtail").toAbsolutePath().normalize();
        // systemd-socket-activate binds the port and execs the server with it as fd 3 on the first connection.
        final Process activator = new ProcessBuilder("systemd-socket-activate", "-l", "127.0.0.1:" + port,
            launcher.toString(), "serve", "--data-dir", data.toString(), "--api-listen", "off").redirectErrorStream(true)
            .redirectOutput(dir.resolve("activate.log").toFile()).start();
        try {
            String size = "";
            for (int attempt = 0; attempt < 50 && size.isEmpty(); attempt++) {
                final ExternalTool.Result r = ExternalTool.run("nbdinfo", "--size", "nbd://127.0.0.1:" + port + "/tcp");
                size = r.exitCode() == 0 ? r.stdout().trim() : "";
                if (size.isEmpty()) {
                    Thread.sleep(200);
                }
            }
            assertThat(size).isEqualTo(Long.toString(64L << 20));
            qemuIo("nbd://127.0.0.1:" + port + "/tcp", "write -P 0x21 0 64k", "read -P 0x21 0 64k");
            assertThat(Files.readString(dir.resolve("activate.log"))).contains("serving on inherited socket fd=3");
        } finally {
            ExternalTool.run("pkill", "-TERM", "-f", "serve --data-dir " + data);
            activator.destroy();
            activator.waitFor();
        }
    }

    private static void qemuIo(final String uri, final String... commands) {
        final List<String> args = ExternalTool.args("qemu-io", "-f", "raw");
        for (final String c : commands) {
            args.add("-c");
            args.add(c);
        }
        args.add(uri);
        final ExternalTool.Result r = ExternalTool.run(args).assertSuccess();
        assertThat(r.output()).doesNotContain("Pattern verification failed");
    }
}
