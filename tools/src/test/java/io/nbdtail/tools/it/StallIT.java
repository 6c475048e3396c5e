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
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * reliability.md R7: the whole server stands still (here: SIGSTOP for 2.5 s, what a very long GC pause looks
 * like from outside) while qemu-io has writes in flight. The writes are delayed, not lost or cut short: qemu-io
 * finishes without an error and reads its pattern back; and the server reports the stall in its status and
 * metrics.
 */
class StallIT {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;

    @Test
    void aStalledServerDelaysRepliesButLosesNothingAndSaysSo() throws Exception {
        final Path data = dir.resolve("data");
        ServerProcess.cli("volume", "create", "st", "--size", "64M", "--data-dir", data.toString()).assertSuccess();
        try (ServerProcess server = ServerProcess.start(data, dir.resolve("server.log"))) {
            final CompletableFuture<ExternalTool.Result> writer = CompletableFuture.supplyAsync(() ->
                ExternalTool.run("qemu-io", "-f", "raw", "-c", "aio_write -P 0x5a 0 16M", "-c", "aio_flush",
                    "-c", "aio_write -P 0x5b 16M 16M", "-c", "aio_flush", "-c", "read -P 0x5a 0 16M",
                    "-c", "read -P 0x5b 16M 16M", server.uri("st")));
            Thread.sleep(150);
            ExternalTool.run("kill", "-STOP", Long.toString(server.pid())).assertSuccess();
            Thread.sleep(2500);
            ExternalTool.run("kill", "-CONT", Long.toString(server.pid())).assertSuccess();
            final ExternalTool.Result result = writer.get(120, TimeUnit.SECONDS);
            assertThat(result.exitCode()).as(result.output()).isZero();
            assertThat(result.output()).doesNotContain("Pattern verification failed").doesNotContain("error");

            final String token = Files.readString(data.resolve("api-token")).trim();
            final HttpClient http = HttpClient.newHttpClient();
            JsonNode status = null;
            for (int i = 0; i < 50; i++) {
                status = JSON.readTree(http.send(HttpRequest.newBuilder(URI.create(server.apiUrl() + "/v1/status"))
                    .header("Authorization", "Bearer " + token).build(), HttpResponse.BodyHandlers.ofString()).body());
                if (status.path("stalls").path("count").asLong() > 0) {
                    break;
                }
                Thread.sleep(100);
            }
            assertThat(status.path("stalls").path("count").asLong()).as(status.toString()).isGreaterThan(0);
            assertThat(status.path("stalls").path("longestMillis").asLong()).isGreaterThanOrEqualTo(2000);
            assertThat(status.path("health").asText()).isEqualTo("degraded");
            final String metrics = http.send(HttpRequest.newBuilder(URI.create(server.apiUrl() + "/metrics"))
                .header("Authorization", "Bearer " + token).build(), HttpResponse.BodyHandlers.ofString()).body();
            assertThat(metrics).containsPattern("nbdtail_stalls_total [1-9]");
            assertThat(server.logText()).contains("stood still");
        }
    }
}
