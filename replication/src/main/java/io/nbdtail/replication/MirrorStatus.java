package io.nbdtail.replication;

import java.time.Instant;

/**
 * A mirror as the API and the CLI show it.
 *
 * @param state        {@code connecting}, {@code copying}, {@code retrying}, {@code cutover}, {@code unknown}
 *                     (frozen; the destination may or may not own the volume), {@code moved}, {@code failed},
 *                     {@code aborted}.
 * @param pass         copy passes started (the first copies everything).
 * @param bytesTotal   the volume's size.
 * @param snapshots    snapshots the mirror moves (their layers go first, one after the other).
 * @param snapshotsSealed of those, the ones the destination holds complete.
 * @param bytesCopied  bytes written or zeroed at the destination, all passes and attempts.
 * @param bytesDirty   bytes still to copy.
 * @param rate         bytes per second over the last seconds.
 * @param etaSeconds   dirty bytes over rate, or -1 if unknown.
 * @param convergence  {@code normal}, {@code throttled} (guest writes delayed) or {@code not-converging}.
 * @param freezeMillis how long guest writes were held at the last cutover attempt; -1 before one.
 */
public record MirrorStatus(String volume, String destination, String state, int pass, long bytesTotal,
                           int snapshots, int snapshotsSealed, long bytesCopied, long bytesDirty, long rate, long etaSeconds, long rateLimit,
                           int attempts, String lastError, String convergence, long freezeMillis, long epoch,
                           Instant started, Instant finished) {
    public boolean done() {
        return state.equals("moved") || state.equals("failed") || state.equals("aborted");
    }
}
