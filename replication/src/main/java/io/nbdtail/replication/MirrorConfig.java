package io.nbdtail.replication;

/** Tuning of one mirror; the defaults suit a 10 GbE link between tails. */
public final class MirrorConfig {
    /** Granularity of dirty tracking. */
    public int chunkSize = 64 << 10;
    /** Largest single write to the destination. */
    public int maxRequest = 1 << 20;
    /** Requests in flight to the destination. */
    public int maxInFlight = 16;
    /** Longest run of dirty chunks handled at once (one allocation query, coalesced writes). */
    public long maxRun = 64L << 20;
    /** Bytes per second, 0 = unlimited; suspended during the freeze. */
    public long bytesPerSecond;
    /** Cut over when what is dirty can be copied within this time at the measured rate. */
    public long convergeMillis = 500;
    /** With a writer that outpaces the link, cut over anyway once the remainder fits this (the freeze bound). */
    public long maxFreezeCopyMillis = 5_000;
    /** Passes without progress before guest writes are throttled. */
    public int stallPassesBeforeThrottle = 2;
    /** Passes throttled without progress before the status says the mirror cannot converge. */
    public int stallPassesBeforeGivingUp = 10;
    /** How long the freeze waits for writes in flight before giving up this cutover attempt. */
    public long freezeDrainMillis = 5_000;
    /** The destination's FLUSH and commit must answer within this. */
    public long requestTimeoutMillis = 60_000;
    public long backoffMinMillis = 500;
    public long backoffMaxMillis = 30_000;
    /** Failed attempts before the mirror gives up; 0 = never (abort it). */
    public int maxAttempts;
    /** How often an unknown cutover outcome is asked of the destination. */
    public long resolveIntervalMillis = 2_000;
}
