package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdError;

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
