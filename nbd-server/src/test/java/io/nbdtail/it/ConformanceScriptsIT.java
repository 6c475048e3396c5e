package io.nbdtail.it;

import io.nbdtail.testing.ExternalTool;
import io.nbdtail.testing.TestServer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Runs the protocol conformance scripts in {@code src/test/python}: libnbd's Python binding with strict mode
 * off (it sends out-of-range, zero-length and wrongly flagged requests on purpose) and a raw-socket client for
 * what libnbd refuses to send (bad magic, unknown client flags, a 4 GiB option length, truncated handshakes).
 * Each script checks exact error values and that the connection still works afterwards, and ends with a
 * {@code N passed, M failed} line.
 */
class ConformanceScriptsIT {
    private static final Path SCRIPTS = Path.of("src", "test", "python");

    @TempDir
    static Path dir;
    static TestServer server;

    @BeforeAll
    static void start() throws Exception {
        server = TestServer.start(dir.resolve("data"));
        server.createVolume("disk", 64L << 20, "conformance disk", false);
        server.createVolume("ro", 16L << 20, "read-only disk", true);
    }

    @AfterAll
    static void stop() throws Exception {
        server.close();
    }

    private static void runScript(final String script, final String... args) {
        final String[] command = new String[args.length + 2];
        command[0] = ExternalTool.PYTHON;
        command[1] = SCRIPTS.resolve(script).toString();
        System.arraycopy(args, 0, command, 2, args.length);
        final ExternalTool.Result result = ExternalTool.run(Map.of("PYTHONDONTWRITEBYTECODE", "1"), 300, command);
        System.out.println(result.stdout());
        result.assertSuccess();
        assertThat(result.stdout()).containsPattern("(?m)^[0-9]+ passed, 0 failed$").doesNotContain("FAIL:");
    }

    @Test
    void handshake() {
        runScript("test_handshake.py", "--uri", server.uri("disk"), "--ro-uri", server.uri("ro"));
    }

    @Test
    void badRequests() {
        runScript("test_bad_requests.py", "--uri", server.uri("disk"), "--ro-uri", server.uri("ro"));
    }

    @Test
    void data() {
        runScript("test_data.py", "--uri", server.uri("disk"), "--ro-uri", server.uri("ro"));
    }

    @Test
    void rawSocket() {
        runScript("test_raw_socket.py", "--host", "127.0.0.1", "--port", Integer.toString(server.port()),
            "--export", "disk");
    }
}
