package io.nbdtail.tools.it;

import io.nbdtail.testing.ExternalTool;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The real {@code nbdtail.jar} as a separate process, so tests can kill it with SIGKILL or SIGTERM and restart
 * it on the same data directory.
 */
final class ServerProcess implements AutoCloseable {
    private final Process process;
    private final Path log;
    private final int port;
    private final int apiPort;

    private ServerProcess(final Process process, final Path log, final int port, final int apiPort) {
        this.process = process;
        this.log = log;
        this.port = port;
        this.apiPort = apiPort;
    }

    /** The command prefix that runs the jar with the JVM flags of the build. */
    static List<String> java(final String... jvmFlags) {
        final List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.addAll(Arrays.asList(System.getProperty("nbdtail.jvm.flags", "").trim().split("\\s+")));
        cmd.addAll(Arrays.asList(jvmFlags));
        cmd.add("-jar");
        cmd.add(jar().toString());
        return cmd;
    }

    static Path jar() {
        final Path jar = Path.of(System.getProperty("nbdtail.jar", "target/nbdtail.jar"));
        if (!Files.isRegularFile(jar)) {
            throw new AssertionError("server jar " + jar + " is missing; build with mvn package first");
        }
        return jar;
    }

    /** Runs an {@code nbdtail} CLI command to completion. */
    static ExternalTool.Result cli(final String... args) {
        final List<String> cmd = java();
        cmd.addAll(Arrays.asList(args));
        return ExternalTool.run(cmd);
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    /** Starts {@code nbdtail serve} and waits until it accepts connections. */
    static ServerProcess start(final Path dataDir, final Path log) throws Exception {
        return start(dataDir, log, freePort(), freePort());
    }

    /** Starts {@code nbdtail serve} with a configuration file ({@code null}: none). */
    static ServerProcess start(final Path dataDir, final Path log, final Path config) throws Exception {
        if (config == null) {
            return start(dataDir, log);
        }
        return start(dataDir, log, freePort(), freePort(), List.of("--config", config.toString()),
            new String[0]);
    }

    /** Starts {@code nbdtail serve} with extra JVM options (such as a test fault point). */
    static ServerProcess start(final Path dataDir, final Path log, final List<String> jvmOptions) throws Exception {
        return start(dataDir, log, freePort(), freePort(), jvmOptions.toArray(String[]::new));
    }

    /**
     * Starts {@code nbdtail serve} on given ports (to restart a server where its peers expect it), with extra JVM
     * flags such as {@code -Dnbdtail.test.faults=...}.
     */
    static ServerProcess start(final Path dataDir, final Path log, final int port, final int apiPort,
                               final String... jvmFlags) throws Exception {
        return start(dataDir, log, port, apiPort, List.of(), jvmFlags);
    }

    private static ServerProcess start(final Path dataDir, final Path log, final int port, final int apiPort,
                                       final List<String> serveOptions, final String[] jvmFlags) throws Exception {
        final List<String> cmd = java(jvmFlags);
        cmd.addAll(List.of("serve", "--data-dir", dataDir.toString(), "--listen", "127.0.0.1:" + port,
            "--api-listen", "127.0.0.1:" + apiPort));
        cmd.addAll(serveOptions);
        final Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
        final ServerProcess server = new ServerProcess(p, log, port, apiPort);
        server.awaitListening();
        return server;
    }

    /** Starts a server that is expected to fail; returns its exit code. */
    static int runToExit(final Path dataDir, final Path log, final int port) throws Exception {
        final List<String> cmd = java();
        cmd.addAll(List.of("serve", "--data-dir", dataDir.toString(), "--listen", "127.0.0.1:" + port,
            "--api-listen", "off"));
        final Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("server did not exit; log:\n" + Files.readString(log));
        }
        return p.exitValue();
    }

    private void awaitListening() throws Exception {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline) {
            if (!process.isAlive()) {
                throw new AssertionError("server exited with " + process.exitValue() + "; log:\n" + logText());
            }
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress("127.0.0.1", port), 200);
                return;
            } catch (final IOException notYet) {
                Thread.sleep(100);
            }
        }
        throw new AssertionError("server did not start listening; log:\n" + logText());
    }

    int port() {
        return port;
    }

    int apiPort() {
        return apiPort;
    }

    boolean alive() {
        return process.isAlive();
    }

    /** Waits for the process to exit (a fault hook halting it); returns the exit code. */
    int awaitExit(final long seconds) throws Exception {
        if (!process.waitFor(seconds, TimeUnit.SECONDS)) {
            throw new AssertionError("server did not exit within " + seconds + " s; log:\n" + logText());
        }
        return process.exitValue();
    }

    /** The control API's base URL. */
    String apiUrl() {
        return "http://127.0.0.1:" + apiPort;
    }

    String uri(final String export) {
        return "nbd://127.0.0.1:" + port + "/" + export;
    }

    /** Waits for the process to end by itself; returns its exit code, or -1 if it is still running. */
    int exitCodeWithin(final long timeoutSeconds) throws InterruptedException {
        return process.waitFor(timeoutSeconds, TimeUnit.SECONDS) ? process.exitValue() : -1;
    }

    long pid() {
        return process.pid();
    }

    String logText() throws IOException {
        return Files.readString(log, StandardCharsets.UTF_8);
    }

    /** SIGKILL: no shutdown hook, no flush, nothing. */
    void kill9() throws Exception {
        ExternalTool.run("kill", "-9", Long.toString(process.pid())).assertSuccess();
        process.waitFor(30, TimeUnit.SECONDS);
    }

    /** SIGTERM, then waits for the exit code. */
    int terminate(final long timeoutSeconds) throws Exception {
        ExternalTool.run("kill", "-TERM", Long.toString(process.pid())).assertSuccess();
        if (!process.waitFor(timeoutSeconds, TimeUnit.SECONDS)) {
            throw new AssertionError("server did not exit within " + timeoutSeconds + " s after SIGTERM; log:\n"
                + logText());
        }
        return process.exitValue();
    }

    @Override
    public void close() throws Exception {
        if (process.isAlive()) {
            process.destroyForcibly();
            process.waitFor(30, TimeUnit.SECONDS);
        }
    }
}
