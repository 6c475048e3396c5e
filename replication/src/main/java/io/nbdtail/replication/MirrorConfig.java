package io.nbdtail.replication;

/**
 * Tuning of one mirror; the defaults suit a 10 GbE link between tails. Not final: the server's configuration
 * file extends it with the transport's settings (TLS).
 */
public class MirrorConfig {
    /**
     * Granularity of dirty tracking: a guest write costs the mirror at least one chunk (16 KiB: a bitmap of 8 MiB
     * per TiB, and 4x the copy of a 4 KiB random write).
     */
    public int chunkSize = 16 << 10;
    /** Largest single write to the destination. */
    public int maxRequest = 1 << 20;
    /** Requests in flight to the destination. */
    public int maxInFlight = 16;
    /** Longest run of dirty chunks handled at once (one allocation query, coalesced writes). */
    public long maxRun = 64L << 20;
    /** Bytes per second, 0 = unlimited; suspended during the freeze. */
    public long bytesPerSecond;
    /** Cut over when what is dirty can be copied within this time at the measured rate. */
    public long convergeMillis = 250;
    /** With a writer that outpaces the link, cut over anyway once the remainder fits this (the freeze bound). */
    public long maxFreezeCopyMillis = 5_000;
    /** Passes without progress before guest writes are throttled. */
    public int stallPassesBeforeThrottle = 2;
    /** Passes throttled without progress before the status says the mirror cannot converge (the throttle halves
     * at each such pass meanwhile, down to {@link #minThrottleBytesPerSecond}). */
    public int stallPassesBeforeGivingUp = 10;
    /** The throttle never goes below this many dirtied bytes per second. */
    public long minThrottleBytesPerSecond = 1 << 20;
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

    /**
     * Checks the values and returns this.
     *
     * @throws IllegalArgumentException naming the first bad value and what it must be.
     */
    public MirrorConfig validate() {
        check(Integer.bitCount(chunkSize) == 1 && chunkSize >= 4096, "chunkSize must be a power of two >= 4096");
        check(maxRequest >= 4096 && maxRequest <= 32 << 20, "maxRequest must be 4096..33554432");
        check(maxInFlight >= 1 && maxInFlight <= 1024, "maxInFlight must be 1..1024");
        check(maxRun >= chunkSize, "maxRun must be >= chunkSize");
        check(bytesPerSecond >= 0, "bytesPerSecond must be >= 0 (0: unlimited)");
        check(convergeMillis > 0 && maxFreezeCopyMillis >= convergeMillis,
            "convergeMillis must be > 0 and <= maxFreezeCopyMillis");
        check(stallPassesBeforeThrottle > 0 && stallPassesBeforeGivingUp > 0, "stall pass counts must be > 0");
        check(freezeDrainMillis > 0 && requestTimeoutMillis > 0 && resolveIntervalMillis > 0,
            "freezeDrainMillis, requestTimeoutMillis and resolveIntervalMillis must be > 0");
        check(backoffMinMillis > 0 && backoffMaxMillis >= backoffMinMillis, "backoff must be 0 < min <= max");
        check(maxAttempts >= 0, "maxAttempts must be >= 0 (0: retry until aborted)");
        return this;
    }

    private static void check(final boolean ok, final String rule) {
        if (!ok) {
            throw new IllegalArgumentException("mirror configuration: " + rule);
        }
    }

    /** An independent copy, for one mirror to change. */
    public MirrorConfig copy() {
        final MirrorConfig c = new MirrorConfig();
        c.chunkSize = chunkSize;
        c.maxRequest = maxRequest;
        c.maxInFlight = maxInFlight;
        c.maxRun = maxRun;
        c.bytesPerSecond = bytesPerSecond;
        c.convergeMillis = convergeMillis;
        c.maxFreezeCopyMillis = maxFreezeCopyMillis;
        c.stallPassesBeforeThrottle = stallPassesBeforeThrottle;
        c.stallPassesBeforeGivingUp = stallPassesBeforeGivingUp;
        c.minThrottleBytesPerSecond = minThrottleBytesPerSecond;
        c.freezeDrainMillis = freezeDrainMillis;
        c.requestTimeoutMillis = requestTimeoutMillis;
        c.backoffMinMillis = backoffMinMillis;
        c.backoffMaxMillis = backoffMaxMillis;
        c.maxAttempts = maxAttempts;
        c.resolveIntervalMillis = resolveIntervalMillis;
        return c;
    }
}
