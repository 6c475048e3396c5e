package io.nbdtail.api;

import com.fasterxml.jackson.annotation.JsonIgnore;
import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;

import java.time.Instant;

/**
 * A long operation (scrub now; merge, rollback and mirror as they land): what the API reports and what
 * {@code DATA/operations/ID.json} stores. Progress fields are written by the worker and read by API calls, so
 * they are volatile; state changes go through {@link OperationManager}.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public final class Operation {
    /** Where an operation is in its life. */
    public enum State {
        @JsonProperty("running") RUNNING,
        @JsonProperty("succeeded") SUCCEEDED,
        @JsonProperty("failed") FAILED,
        @JsonProperty("cancelled") CANCELLED
    }

    public String id;
    public String kind;
    public String volume;
    public volatile State state = State.RUNNING;
    public volatile long bytesDone;
    public long bytesTotal;
    public volatile String error;
    public Instant started;
    public volatile Instant finished;

    @JsonIgnore
    volatile boolean cancelRequested;

    /** Fraction done, 0 to 1. */
    @JsonProperty("progress")
    public double progress() {
        if (state == State.SUCCEEDED) {
            return 1.0;
        }
        return bytesTotal <= 0 ? 0.0 : Math.min(1.0, (double) bytesDone / bytesTotal);
    }

    /** Average rate since the start. */
    @JsonProperty("bytesPerSecond")
    public long bytesPerSecond() {
        final Instant end = finished != null ? finished : Instant.now();
        final long millis = Math.max(1, end.toEpochMilli() - started.toEpochMilli());
        return bytesDone * 1000 / millis;
    }

    /** Seconds left at the average rate; {@code null} when unknown or finished. */
    @JsonProperty("etaSeconds")
    public Long etaSeconds() {
        final long rate = bytesPerSecond();
        if (state != State.RUNNING || rate <= 0) {
            return null;
        }
        return Math.max(0, bytesTotal - bytesDone) / rate;
    }

    public boolean cancelRequested() {
        return cancelRequested;
    }
}
