package io.nbdtail.tools.online;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.time.Duration;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** Progress lines and the bar of {@code --wait}, and the small formatting helpers they use. */
class OperationWaitTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    private static JsonNode op(final String state, final double progress, final long done, final Long eta)
        throws Exception {
        return JSON.readTree("""
            {"id": "op1", "kind": "scrub", "volume": "vol1", "state": "%s", "progress": %s, "bytesDone": %d,
             "bytesTotal": 1073741824, "bytesPerSecond": 89128960, "etaSeconds": %s}"""
            .formatted(state, progress, done, eta));
    }

    @Test
    void shouldPrintTheLineOfTheBrief() throws Exception {
        assertThat(OperationWait.line(op("running", 0.42, 440401920, 7L)))
            .isEqualTo("scrub vol1: 42% 420 MiB/1 GiB 85 MiB/s eta 7s");
        assertThat(OperationWait.line(op("running", 0.999, 1072668082, null)))
            .isEqualTo("scrub vol1: 99% 1023 MiB/1 GiB 85 MiB/s");
        assertThat(OperationWait.line(op("succeeded", 1, 1073741824, null)))
            .isEqualTo("scrub vol1: 100% 1 GiB/1 GiB 85 MiB/s");
        assertThat(OperationWait.line(JSON.readTree("{\"kind\": \"merge\", \"state\": \"running\"}")))
            .isEqualTo("merge: 0%");
    }

    @Test
    void shouldPrintEveryStateInPlainModeWhenAskedToPrintEachTime() throws Exception {
        try (FakeApi api = new FakeApi(); ApiClient client = new ApiClient(api.url(), FakeApi.TOKEN)) {
            api.on("GET", "/v1/operations/op1", 200, op("running", 0.5, 536870912, 6L).toString());
            api.on("GET", "/v1/operations/op1", 200, op("succeeded", 1, 1073741824, null).toString());
            final StringWriter out = new StringWriter();
            final JsonNode last = new OperationWait(client, new PrintWriter(out), false, false, Duration.ofMillis(1),
                Duration.ZERO).await(op("running", 0, 0, null));
            assertThat(last.get("state").asText()).isEqualTo("succeeded");
            assertThat(out.toString()).isEqualTo("""
                scrub vol1: 0% 0 B/1 GiB 85 MiB/s
                scrub vol1: 50% 512 MiB/1 GiB 85 MiB/s eta 6s
                scrub vol1: 100% 1 GiB/1 GiB 85 MiB/s
                """);
        }
    }

    @Test
    void shouldRedrawOneLineWithABarOnATerminal() throws Exception {
        try (FakeApi api = new FakeApi(); ApiClient client = new ApiClient(api.url(), FakeApi.TOKEN)) {
            api.on("GET", "/v1/operations/op1", 200, op("succeeded", 1, 1073741824, null).toString());
            final StringWriter out = new StringWriter();
            new OperationWait(client, new PrintWriter(out), true, false, Duration.ofMillis(1), Duration.ZERO)
                .await(op("running", 0.5, 536870912, 6L));
            assertThat(out.toString()).isEqualTo(
                "\rscrub vol1 [############............] 50% 512 MiB/1 GiB 85 MiB/s eta 6s"
                    + "\rscrub vol1 [########################] 100% 1 GiB/1 GiB 85 MiB/s        \n");
        }
    }

    @Test
    void shouldSayTheOperationGoesOnWhenPollingFails() throws Exception {
        try (FakeApi api = new FakeApi(); ApiClient client = new ApiClient(api.url(), FakeApi.TOKEN)) {
            api.on("GET", "/v1/operations/op1", 503, """
                {"error": "shutting_down", "message": "the server is shutting down"}""");
            final StringWriter out = new StringWriter();
            final OperationWait wait = new OperationWait(client, new PrintWriter(out), false, false,
                Duration.ofMillis(1), Duration.ZERO);
            assertThatThrownBy(() -> wait.await(op("running", 0, 0, null)))
                .isInstanceOf(ApiException.class)
                .hasMessage("the server is shutting down; operation op1 may still be running: nbdtail operation get"
                    + " op1 --wait");
        }
    }

    @Test
    void shouldFormatDurations() {
        assertThat(Output.duration(7)).isEqualTo("7s");
        assertThat(Output.duration(192)).isEqualTo("3m12s");
        assertThat(Output.duration(7500)).isEqualTo("2h05m");
        assertThat(Output.duration(273600)).isEqualTo("3d04h");
    }
}
