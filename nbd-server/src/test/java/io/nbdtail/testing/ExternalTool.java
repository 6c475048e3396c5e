package io.nbdtail.testing;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * Runs a real client (qemu-img, nbdinfo, nbdsh, fio, ...) and captures what it printed. Tests assert on the
 * exit code and output; a tool that is missing fails the test with the command to install it, because
 * {@code bin/test} installs every tool the suite needs.
 */
public final class ExternalTool {
    /** The system python, which is where Debian's python3-libnbd lives (not whatever python3 is on PATH). */
    public static final String PYTHON = "/usr/bin/python3";

    private ExternalTool() {
    }

    /** What a finished command left behind. */
    public record Result(List<String> command, int exitCode, String stdout, String stderr) {
        /** Fails with the full output unless the command exited 0. */
        public Result assertSuccess() {
            if (exitCode != 0) {
                throw new AssertionError("command failed with exit code " + exitCode + ": " + String.join(" ", command)
                    + "\n--- stdout ---\n" + stdout + "\n--- stderr ---\n" + stderr);
            }
            return this;
        }

        public String output() {
            return stdout + stderr;
        }
    }

    public static Result run(final String... command) {
        return run(Map.of(), 300, command);
    }

    public static Result run(final List<String> command) {
        return run(Map.of(), 300, command.toArray(String[]::new));
    }

    /**
     * @param env            extra environment variables.
     * @param timeoutSeconds the command is killed after this long and the test fails.
     */
    public static Result run(final Map<String, String> env, final long timeoutSeconds, final String... command) {
        requireTool(command[0]);
        final ProcessBuilder pb = new ProcessBuilder(command);
        // System directories first: nbdsh runs "python3" from PATH and needs Debian's, which has the nbd module,
        // not a pyenv or virtualenv python that may come earlier on a developer's PATH.
        pb.environment().put("PATH", "/usr/sbin:/usr/bin:/sbin:/bin:" + System.getenv().getOrDefault("PATH", ""));
        pb.environment().putAll(env);
        pb.redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        try {
            final Process p = pb.start();
            final Pump out = new Pump(p.getInputStream());
            final Pump err = new Pump(p.getErrorStream());
            out.start();
            err.start();
            if (!p.waitFor(timeoutSeconds, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                p.waitFor(10, TimeUnit.SECONDS);
                out.join(5000);
                err.join(5000);
                throw new AssertionError("command timed out after " + timeoutSeconds + " s: "
                    + String.join(" ", command) + "\n--- stdout ---\n" + out.text() + "\n--- stderr ---\n" + err.text());
            }
            out.join();
            err.join();
            return new Result(Arrays.asList(command), p.exitValue(), out.text(), err.text());
        } catch (final IOException e) {
            throw new UncheckedIOException("cannot start " + String.join(" ", command), e);
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError("interrupted", e);
        }
    }

    /** Fails with the install hint unless {@code tool} is an absolute path or found on PATH. */
    public static void requireTool(final String tool) {
        if (tool.startsWith("/")) {
            if (!Files.isExecutable(Path.of(tool))) {
                throw new AssertionError(tool + " is missing; run bin/install-test-deps (or bin/test, which does)");
            }
            return;
        }
        for (final String dir : System.getenv().getOrDefault("PATH", "/usr/bin:/bin").split(":")) {
            if (Files.isExecutable(Path.of(dir, tool))) {
                return;
            }
        }
        throw new AssertionError(tool + " is not installed; run bin/install-test-deps (or bin/test, which does)");
    }

    /** Convenience for building argument lists. */
    public static List<String> args(final String... parts) {
        return new ArrayList<>(Arrays.asList(parts));
    }

    private static final class Pump extends Thread {
        private final InputStream in;
        private final ByteArrayOutputStream buffer = new ByteArrayOutputStream();

        Pump(final InputStream in) {
            this.in = in;
            setDaemon(true);
        }

        @Override
        public void run() {
            try {
                in.transferTo(buffer);
            } catch (final IOException ignored) {
                // The process died; whatever was read is kept.
            }
        }

        synchronized String text() {
            return buffer.toString(StandardCharsets.UTF_8);
        }
    }
}
