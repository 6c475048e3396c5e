package io.nbdtail.tools.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.nbdtail.testing.ExternalTool;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * reliability.md R7, the near-out-of-memory half: a server whose direct memory (where request buffers live) is
 * far smaller than what its clients ask for at once. Six {@code qemu-io} clients each put three 32 MiB writes in
 * flight (576 MiB of payload) into a JVM with 96 MiB of direct memory. Before the server-wide buffer budget
 * every connection that hit the limit got an {@code OutOfMemoryError} and was dropped with its writes; now the
 * requests that do not fit wait, their connections not reading, and every write lands and reads back. The
 * waiting is counted in {@code /metrics} and makes the status {@code degraded}.
 */
class MemoryPressureIT {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int CLIENTS = 6;

    @TempDir
    Path dir;

    @Test
    void requestsBeyondTheDirectMemoryWaitAndLandInsteadOfFailing() throws Exception {
        final Path data = dir.resolve("data");
        ServerProcess.cli("volume", "create", "mem", "--size", "1G", "--data-dir", data.toString()).assertSuccess();
        try (ServerProcess server = ServerProcess.start(data, dir.resolve("server.log"),
            List.of("-XX:MaxDirectMemorySize=96m"))) {
            final List<CompletableFuture<ExternalTool.Result>> clients = new ArrayList<>();
            for (int i = 0; i < CLIENTS; i++) {
                final long base = i * 128L;
                final String p = Integer.toHexString(0x10 * (i + 1));
                clients.add(CompletableFuture.supplyAsync(() -> ExternalTool.run("qemu-io", "-f", "raw",
                    "-c", "aio_write -P 0x" + p + " " + base + "M 32M",
                    "-c", "aio_write -P 0x" + (p.charAt(0)) + "1 " + (base + 32) + "M 32M",
                    "-c", "aio_write -P 0x" + (p.charAt(0)) + "2 " + (base + 64) + "M 32M",
                    "-c", "aio_flush",
                    "-c", "read -P 0x" + p + " " + base + "M 32M",
                    "-c", "read -P 0x" + (p.charAt(0)) + "1 " + (base + 32) + "M 32M",
                    "-c", "read -P 0x" + (p.charAt(0)) + "2 " + (base + 64) + "M 32M",
                    server.uri("mem"))));
            }
            for (final CompletableFuture<ExternalTool.Result> client : clients) {
                final ExternalTool.Result result = client.get(300, TimeUnit.SECONDS);
                assertThat(result.exitCode()).as(result.output()).isZero();
                assertThat(result.output()).doesNotContain("failed").doesNotContain("error")
                    .contains("read 33554432/33554432 bytes");
            }

            final String token = Files.readString(data.resolve("api-token")).trim();
            final HttpClient http = HttpClient.newHttpClient();
            final String metrics = get(http, server.apiUrl() + "/metrics", token);
            assertThat(metrics).containsPattern("nbdtail_buffer_waits_total [1-9]")
                .contains("nbdtail_buffer_bytes 0\n");
            final JsonNode status = JSON.readTree(get(http, server.apiUrl() + "/v1/status", token));
            assertThat(status.path("buffers").path("short").asBoolean()).as(status.toString()).isTrue();
            assertThat(status.path("health").asText()).isEqualTo("degraded");
            assertThat(server.logText()).doesNotContain("OutOfMemoryError").doesNotContain("unexpected error");
        }
    }

    private static String get(final HttpClient http, final String url, final String token) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create(url)).header("Authorization", "Bearer " + token).build(),
            HttpResponse.BodyHandlers.ofString()).body();
    }
}
