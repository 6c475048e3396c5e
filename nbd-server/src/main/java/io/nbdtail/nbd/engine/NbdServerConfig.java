package io.nbdtail.nbd.engine;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import io.nbdtail.nbd.tls.TlsConfig;

/**
 * Limits and sizing of the NBD server. Every field has a safe default; {@link #conclude()} checks the
 * combination once at start-up and names any bad value.
 *
 * <p>Read from the {@code nbd} section of the server's configuration file (JSON); the field names are the keys.
 */
@JsonIgnoreProperties(ignoreUnknown = false)
public final class NbdServerConfig {
    /** Largest READ or WRITE payload accepted: 32 MiB, which is what qemu and the spec's default assume. */
    public int maxPayload = 32 << 20;
    /**
     * Largest WRITE payload that is skipped and answered with EINVAL; a longer one closes the connection
     * rather than reading that much for nothing.
     */
    public long maxDiscardedPayload = 128L << 20;
    /** Largest option request in the handshake. Names are at most 4096 bytes, so 64 KiB is generous. */
    public int maxOptionLength = 64 << 10;
    /** Options a client may send before it must choose an export. */
    public int maxOptions = 256;
    /** Time a client has from connecting to finishing the handshake. */
    public long handshakeTimeoutMillis = 10_000;
    /** Requests being served per connection before the server stops reading from it. At least 64. */
    public int maxInFlightRequests = 128;
    /** Bytes (WRITE payloads plus READ lengths) being served per connection before reading stops. */
    public long maxInFlightBytes = 64L << 20;
    /** Connections across all exports; beyond this new connections are closed at once. */
    public int maxConnections = 1024;
    /** Connections from one IP address. */
    public int maxConnectionsPerAddress = 128;
    /** Extents in one BLOCK_STATUS reply without REQ_ONE (8 bytes each). */
    public int maxBlockStatusExtents = 1024;
    /** Chunks one structured READ reply may be split into to follow holes; the rest is sent as data. */
    public int maxReadChunks = 64;
    /** Netty event loops; 0 means one per core. */
    public int eventLoopThreads = 0;
    /** Threads doing disc I/O; 0 means four per core (page-cache hits are short, misses block). */
    public int storageThreads = 0;
    /** How long a graceful shutdown waits for requests in flight before closing anyway. */
    public long shutdownTimeoutMillis = 30_000;
    /** NBD_OPT_STARTTLS: off unless configured (see {@link TlsConfig} and docs/security.md). */
    public TlsConfig tls = new TlsConfig();

    /** Checks the values and fills in the derived defaults; returns {@code this}. */
    public NbdServerConfig conclude() {
        require(maxPayload >= 1 << 20 && maxPayload <= 1 << 30, "maxPayload must be between 1 MiB and 1 GiB",
            maxPayload);
        require(maxDiscardedPayload >= maxPayload, "maxDiscardedPayload must be >= maxPayload", maxDiscardedPayload);
        require(maxOptionLength >= 4096 + 64, "maxOptionLength must leave room for a 4096-byte name",
            maxOptionLength);
        require(maxOptions >= 8, "maxOptions must be at least 8", maxOptions);
        require(handshakeTimeoutMillis > 0, "handshakeTimeoutMillis must be positive", handshakeTimeoutMillis);
        require(maxInFlightRequests >= 64, "maxInFlightRequests must be at least 64", maxInFlightRequests);
        require(maxInFlightBytes >= maxPayload, "maxInFlightBytes must be >= maxPayload", maxInFlightBytes);
        require(maxConnections >= 1, "maxConnections must be positive", maxConnections);
        require(maxConnectionsPerAddress >= 1, "maxConnectionsPerAddress must be positive", maxConnectionsPerAddress);
        require(maxBlockStatusExtents >= 1 && maxBlockStatusExtents <= 100_000,
            "maxBlockStatusExtents must be between 1 and 100000", maxBlockStatusExtents);
        require(maxReadChunks >= 1, "maxReadChunks must be positive", maxReadChunks);
        require(eventLoopThreads >= 0 && storageThreads >= 0, "thread counts must not be negative",
            Math.min(eventLoopThreads, storageThreads));
        require(shutdownTimeoutMillis >= 0, "shutdownTimeoutMillis must not be negative", shutdownTimeoutMillis);
        if (tls == null) {
            tls = new TlsConfig();
        }
        tls.parsedMode();
        final int cores = Runtime.getRuntime().availableProcessors();
        if (eventLoopThreads == 0) {
            eventLoopThreads = cores;
        }
        if (storageThreads == 0) {
            storageThreads = 4 * cores;
        }
        return this;
    }

    private static void require(final boolean ok, final String rule, final long value) {
        if (!ok) {
            throw new IllegalArgumentException("invalid NBD server configuration: " + rule + " (got " + value + ")");
        }
    }
}
