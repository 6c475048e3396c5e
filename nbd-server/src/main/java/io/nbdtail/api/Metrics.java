package io.nbdtail.api;

import io.nbdtail.nbd.codec.BufferBudget;
import io.nbdtail.nbd.engine.Export;
import io.nbdtail.nbd.engine.ExportStats;
import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdError;
import io.nbdtail.replication.MirrorStatus;
import io.nbdtail.server.NbdTail;
import io.nbdtail.storage.FlushCoordinator;
import org.HdrHistogram.Histogram;

import java.util.List;
import java.util.Locale;
import java.util.function.ToLongFunction;

/**
 * {@code GET /metrics} in the Prometheus text format (0.0.4).
 *
 * <p>Written by hand over the server's own counters and HdrHistogram recorders rather than through
 * Micrometer: the hot path then costs one {@code LongAdder} increment and one wait-free
 * {@code Recorder.recordValue} per request, with no meter lookup or tag allocation, and the jar does not grow
 * by Micrometer's dozen dependencies for a format that is a page of text. Latencies are exported as
 * Prometheus histograms with fixed buckets read off the HdrHistogram, so quantiles can be aggregated across
 * tails in Prometheus.
 */
final class Metrics {
    /** Bucket upper bounds in seconds: 50 us to 10 s. */
    private static final double[] BUCKETS = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
        0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};
    private static final NbdCommand[] COMMANDS = {NbdCommand.READ, NbdCommand.WRITE, NbdCommand.FLUSH,
        NbdCommand.TRIM, NbdCommand.WRITE_ZEROES, NbdCommand.CACHE, NbdCommand.BLOCK_STATUS, NbdCommand.DISC,
        NbdCommand.UNKNOWN};

    private final NbdTail tail;

    Metrics(final NbdTail tail) {
        this.tail = tail;
    }

    synchronized String render() {
        final StringBuilder out = new StringBuilder(8192);
        final List<Export> exports = tail.volumes().all();

        header(out, "nbdtail_stalls_total", "counter", "Times the whole server stood still for 1 s or more (GC pause,"
            + " stopped or starved process).");
        out.append("nbdtail_stalls_total ").append(tail.watchdog().stalls()).append('\n');
        header(out, "nbdtail_stall_longest_seconds", "gauge", "The longest stall since the start.");
        out.append("nbdtail_stall_longest_seconds ").append(tail.watchdog().longestMillis() / 1000.0).append('\n');
        final BufferBudget buffers = tail.nbd().context().buffers();
        header(out, "nbdtail_buffer_bytes", "gauge", "Bytes of request buffers (WRITE payloads, READ replies) held"
            + " across the server.");
        out.append("nbdtail_buffer_bytes ").append(buffers.used()).append('\n');
        header(out, "nbdtail_buffer_limit_bytes", "gauge", "The limit on those bytes (nbd.maxBufferedBytes).");
        out.append("nbdtail_buffer_limit_bytes ").append(buffers.limit()).append('\n');
        header(out, "nbdtail_buffer_waits_total", "counter", "Requests that waited for buffer memory, their"
            + " connection not reading meanwhile.");
        out.append("nbdtail_buffer_waits_total ").append(buffers.waits()).append('\n');
        header(out, "nbdtail_requests_total", "counter", "NBD requests received, by volume and command.");
        for (final Export e : exports) {
            for (final NbdCommand c : COMMANDS) {
                sample(out, "nbdtail_requests_total", e.name(), "command", name(c), e.stats().requests(c));
            }
        }
        header(out, "nbdtail_bytes_total", "counter", "Payload bytes served, by volume and direction.");
        for (final Export e : exports) {
            sample(out, "nbdtail_bytes_total", e.name(), "direction", "read", e.stats().bytesRead());
            sample(out, "nbdtail_bytes_total", e.name(), "direction", "write", e.stats().bytesWritten());
        }
        header(out, "nbdtail_errors_total", "counter", "Error replies, by volume and NBD error value.");
        for (final Export e : exports) {
            for (final NbdError err : NbdError.values()) {
                sample(out, "nbdtail_errors_total", e.name(), "error", err.name(), e.stats().errors(err));
            }
        }
        header(out, "nbdtail_requests_in_flight", "gauge", "Requests being served now.");
        for (final Export e : exports) {
            sample(out, "nbdtail_requests_in_flight", e.name(), null, null, e.stats().inFlight());
        }
        header(out, "nbdtail_request_duration_seconds", "histogram",
            "Time from decoding a request to writing its reply.");
        for (final Export e : exports) {
            final ExportStats stats = e.stats();
            for (final NbdCommand c : COMMANDS) {
                if (c == NbdCommand.DISC || c == NbdCommand.UNKNOWN) {
                    continue;
                }
                histogram(out, "nbdtail_request_duration_seconds", e.name(), "command", name(c), stats.latency(c));
            }
        }
        header(out, "nbdtail_flushes_total", "counter", "fdatasync calls (one per group of FLUSH/FUA waiters).");
        for (final Export e : exports) {
            sample(out, "nbdtail_flushes_total", e.name(), null, null, e.volume().flusher().syncCount());
        }
        header(out, "nbdtail_flush_waiters_total", "counter", "FLUSH requests and FUA writes answered by a sync.");
        for (final Export e : exports) {
            sample(out, "nbdtail_flush_waiters_total", e.name(), null, null, e.volume().flusher().waitersServed());
        }
        header(out, "nbdtail_flush_failures_total", "counter", "Failed fdatasync calls.");
        for (final Export e : exports) {
            sample(out, "nbdtail_flush_failures_total", e.name(), null, null, e.volume().flusher().syncFailures());
        }
        header(out, "nbdtail_flush_duration_seconds", "histogram", "Duration of each fdatasync.");
        for (final Export e : exports) {
            final FlushCoordinator f = e.volume().flusher();
            histogram(out, "nbdtail_flush_duration_seconds", e.name(), null, null, f.syncLatency());
        }
        header(out, "nbdtail_connections", "gauge", "NBD connections in the transmission phase, by volume.");
        for (final Export e : exports) {
            sample(out, "nbdtail_connections", e.name(), null, null, e.stats().connectionsOpen());
        }
        header(out, "nbdtail_connections_opened_total", "counter", "NBD connections opened, by volume.");
        for (final Export e : exports) {
            sample(out, "nbdtail_connections_opened_total", e.name(), null, null, e.stats().connectionsOpened());
        }
        header(out, "nbdtail_volume_size_bytes", "gauge", "Volume size.");
        for (final Export e : exports) {
            sample(out, "nbdtail_volume_size_bytes", e.name(), null, null, e.size());
        }
        header(out, "nbdtail_volume_failed", "gauge", "1 if the volume stopped taking writes after a disc error.");
        for (final Export e : exports) {
            sample(out, "nbdtail_volume_failed", e.name(), null, null, e.volume().failure() != null ? 1 : 0);
        }
        header(out, "nbdtail_server_connections", "gauge", "All NBD connections, including those in the handshake.");
        out.append("nbdtail_server_connections ").append(tail.nbd().connectionCount()).append('\n');
        header(out, "nbdtail_server_connections_refused_total", "counter", "Connections closed by a connection cap.");
        out.append("nbdtail_server_connections_refused_total ").append(tail.nbd().refusedConnections()).append('\n');
        header(out, "nbdtail_operation_progress_ratio", "gauge", "Progress of running long operations, 0 to 1.");
        for (final Operation op : tail.operations().list()) {
            if (op.state == Operation.State.RUNNING) {
                out.append("nbdtail_operation_progress_ratio{id=\"").append(op.id).append("\",kind=\"").append(op.kind)
                    .append("\",volume=\"").append(op.volume).append("\"} ").append(format(op.progress())).append('\n');
            }
        }
        mirrors(out);
        header(out, "nbdtail_uptime_seconds", "gauge", "Seconds since the server started.");
        out.append("nbdtail_uptime_seconds ").append((System.currentTimeMillis() - tail.started().toEpochMilli()) / 1000)
            .append('\n');
        return out.toString();
    }

    private static final List<String> MIRROR_STATES = List.of("connecting", "copying", "retrying", "cutover",
        "unknown", "moved", "failed", "aborted");

    /** One set of series per mirror since the start (finished ones keep their last values). */
    private void mirrors(final StringBuilder out) {
        final List<MirrorStatus> all = tail.mirrors().list();
        header(out, "nbdtail_mirror_state", "gauge", "1 for the mirror's current state.");
        for (final var m : all) {
            for (final String state : MIRROR_STATES) {
                out.append("nbdtail_mirror_state{volume=\"").append(m.volume()).append("\",state=\"").append(state)
                    .append("\"} ").append(m.state().equals(state) ? 1 : 0).append('\n');
            }
        }
        mirrorGauge(out, all, "nbdtail_mirror_bytes_copied_total", "counter", "Bytes written or zeroed at the"
            + " destination.", MirrorStatus::bytesCopied);
        mirrorGauge(out, all, "nbdtail_mirror_bytes_dirty", "gauge", "Bytes still to copy.",
            MirrorStatus::bytesDirty);
        mirrorGauge(out, all, "nbdtail_mirror_rate_bytes_per_second", "gauge", "Copy rate over the last seconds.",
            MirrorStatus::rate);
        mirrorGauge(out, all, "nbdtail_mirror_pass", "gauge", "Copy passes started.", m -> m.pass());
        mirrorGauge(out, all, "nbdtail_mirror_attempts_total", "counter", "Failed attempts, each retried.",
            m -> m.attempts());
        mirrorGauge(out, all, "nbdtail_mirror_freeze_milliseconds", "gauge", "Guest writes held at the last cutover"
            + " attempt; -1 before one.", MirrorStatus::freezeMillis);
    }

    private static void mirrorGauge(final StringBuilder out, final List<MirrorStatus> all,
                                    final String name, final String type, final String help,
                                    final ToLongFunction<MirrorStatus> value) {
        header(out, name, type, help);
        for (final var m : all) {
            out.append(name).append("{volume=\"").append(m.volume()).append("\"} ").append(value.applyAsLong(m))
                .append('\n');
        }
    }

    private static String name(final NbdCommand c) {
        return c.name().toLowerCase(Locale.ROOT);
    }

    private static void header(final StringBuilder out, final String name, final String type, final String help) {
        out.append("# HELP ").append(name).append(' ').append(help).append('\n');
        out.append("# TYPE ").append(name).append(' ').append(type).append('\n');
    }

    private static void labels(final StringBuilder out, final String volume, final String key, final String value,
                               final String le) {
        // Volume names are [A-Za-z0-9._-] and need no escaping.
        out.append("{volume=\"").append(volume).append('"');
        if (key != null) {
            out.append(',').append(key).append("=\"").append(value).append('"');
        }
        if (le != null) {
            out.append(",le=\"").append(le).append('"');
        }
        out.append('}');
    }

    private static void sample(final StringBuilder out, final String name, final String volume, final String key,
                               final String value, final long sample) {
        out.append(name);
        labels(out, volume, key, value, null);
        out.append(' ').append(sample).append('\n');
    }

    private static void histogram(final StringBuilder out, final String name, final String volume, final String key,
                                  final String value, final Histogram h) {
        final long count = h.getTotalCount();
        for (final double bucket : BUCKETS) {
            final long bound = (long) (bucket * 1e9);
            out.append(name).append("_bucket");
            labels(out, volume, key, value, format(bucket));
            out.append(' ').append(count == 0 ? 0 : h.getCountBetweenValues(0, bound)).append('\n');
        }
        out.append(name).append("_bucket");
        labels(out, volume, key, value, "+Inf");
        out.append(' ').append(count).append('\n');
        out.append(name).append("_sum");
        labels(out, volume, key, value, null);
        out.append(' ').append(format(count == 0 ? 0 : h.getMean() * count / 1e9)).append('\n');
        out.append(name).append("_count");
        labels(out, volume, key, value, null);
        out.append(' ').append(count).append('\n');
    }

    private static String format(final double v) {
        return v == Math.rint(v) && Math.abs(v) < 1e15 ? Long.toString((long) v) : Double.toString(v);
    }
}
