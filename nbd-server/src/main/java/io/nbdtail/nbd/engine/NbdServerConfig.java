package io.nbdtail.nbd.engine;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import io.nbdtail.nbd.tls.TlsConfig;
import io.netty.util.internal.PlatformDependent;

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
    /**
     * Requests being served on all connections to one volume; a connection that finds no room stops reading
     * until there is (it may always have one). Keeps one volume from taking every storage thread.
     */
    public int maxInFlightRequestsPerVolume = 1024;
    /** Bytes being served on all connections to one volume, likewise. */
    public long maxInFlightBytesPerVolume = 512L << 20;
    /**
     * Bytes of request buffers (WRITE payloads, READ replies) held at once across the whole server; a request
     * that does not fit waits, its connection not reading, until others finish. 0 (the default) means half of
     * the JVM's direct memory limit ({@code -XX:MaxDirectMemorySize}, by default the heap's maximum), leaving
     * the rest for socket buffers, TLS and the buffer pools. Keeps many clients' large requests from running
     * the JVM out of direct memory.
     */
    public long maxBufferedBytes = 0;
    /**
     * Time a request may take to arrive once its first byte has: a client trickling a header or a WRITE payload
     * (slow-loris) is closed after this. 0 turns it off. Only counted while the server is reading.
     */
    public long requestTimeoutMillis = 120_000;
    /**
     * Time a connection in the transmission phase may send no request and have none in flight before it is
     * closed. 0 (the default) turns it off: qemu keeps a connection open while the guest does no I/O, and
     * closing it would fail the guest's next I/O unless qemu was started with {@code reconnect-delay}.
     */
    public long idleTimeoutMillis = 0;
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

    /** {@link #maxBufferedBytes}, or its default when it is 0. */
    public long bufferedBytesLimit() {
        return maxBufferedBytes != 0 ? maxBufferedBytes : Math.max(maxPayload, PlatformDependent.maxDirectMemory() / 2);
    }

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
        require(maxInFlightRequestsPerVolume >= maxInFlightRequests,
            "maxInFlightRequestsPerVolume must be >= maxInFlightRequests", maxInFlightRequestsPerVolume);
        require(maxInFlightBytesPerVolume >= maxInFlightBytes, "maxInFlightBytesPerVolume must be >= maxInFlightBytes",
            maxInFlightBytesPerVolume);
        require(maxBufferedBytes == 0 || maxBufferedBytes >= maxPayload,
            "maxBufferedBytes must be 0 (half the direct memory limit) or >= maxPayload", maxBufferedBytes);
        require(requestTimeoutMillis == 0 || requestTimeoutMillis >= 1000,
            "requestTimeoutMillis must be 0 (off) or at least 1000", requestTimeoutMillis);
        require(idleTimeoutMillis == 0 || idleTimeoutMillis >= 1000, "idleTimeoutMillis must be 0 (off) or at least"
            + " 1000", idleTimeoutMillis);
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
