package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdError;

import org.HdrHistogram.Histogram;
import org.HdrHistogram.Recorder;

import java.util.concurrent.atomic.LongAdder;

/**
 * Counters of one export, shared by all its connections. Errors are counted here rather than logged per
 * request, so a misbehaving client cannot flood the log.
 */
public final class ExportStats {
    private static final int COMMANDS = NbdCommand.values().length;

    private final LongAdder[] requests = adders(COMMANDS);
    private final LongAdder[] errors = adders(NbdError.count());
    private final LongAdder bytesRead = new LongAdder();
    private final LongAdder bytesWritten = new LongAdder();
    private final LongAdder connectionsOpened = new LongAdder();
    private final LongAdder connectionsOpen = new LongAdder();
    private final LongAdder inFlight = new LongAdder();
    /** Request latency per command, from decode to reply, in nanoseconds; wait-free for the recording threads. */
    private final Recorder[] latency = new Recorder[COMMANDS];
    /** What the recorders have collected so far, for cumulative Prometheus histograms. */
    private final Histogram[] latencyTotal = new Histogram[COMMANDS];

    public ExportStats() {
        for (int i = 0; i < COMMANDS; i++) {
            latency[i] = new Recorder(3);
            latencyTotal[i] = new Histogram(3);
        }
    }

    private static LongAdder[] adders(final int n) {
        final LongAdder[] a = new LongAdder[n];
        for (int i = 0; i < n; i++) {
            a[i] = new LongAdder();
        }
        return a;
    }

    public void onRequest(final NbdCommand command) {
        requests[command.ordinal()].increment();
    }

    public void onError(final NbdError error) {
        errors[error.ordinal()].increment();
    }

    public void onRead(final long bytes) {
        bytesRead.add(bytes);
    }

    public void onWrite(final long bytes) {
        bytesWritten.add(bytes);
    }

    /** A request was handed to storage; {@link #onCompleted} ends it. */
    public void onDispatched() {
        inFlight.increment();
    }

    /** A dispatched request was answered after {@code nanos}. */
    public void onCompleted(final NbdCommand command, final long nanos) {
        inFlight.decrement();
        latency[command.ordinal()].recordValue(Math.max(nanos, 0));
    }

    public long inFlight() {
        return inFlight.sum();
    }

    /**
     * The latency histogram of {@code command} since the export opened. Folds in what was recorded since the
     * last call; call from one thread at a time (the metrics endpoint serialises scrapes).
     */
    public synchronized Histogram latency(final NbdCommand command) {
        final Histogram total = latencyTotal[command.ordinal()];
        total.add(latency[command.ordinal()].getIntervalHistogram());
        return total;
    }

    public void onConnectionOpened() {
        connectionsOpened.increment();
        connectionsOpen.increment();
    }

    public void onConnectionClosed() {
        connectionsOpen.decrement();
    }

    public long requests(final NbdCommand command) {
        return requests[command.ordinal()].sum();
    }

    public long errors(final NbdError error) {
        return errors[error.ordinal()].sum();
    }

    public long bytesRead() {
        return bytesRead.sum();
    }

    public long bytesWritten() {
        return bytesWritten.sum();
    }

    public long connectionsOpen() {
        return connectionsOpen.sum();
    }

    public long connectionsOpened() {
        return connectionsOpened.sum();
    }
}
