package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.codec.BufferBudget;
import io.nbdtail.nbd.tls.NbdTls;

import java.util.concurrent.Executor;

/**
 * What every connection shares: the limits, the exports, the storage threads, the request buffer budget and
 * the server's lifecycle.
 */
public final class NbdServerContext {
    private final NbdServerConfig config;
    private final ExportRegistry exports;
    private final Executor storageExecutor;
    private final NbdTls tls;
    private final BufferBudget buffers;
    private volatile boolean shuttingDown;
    private volatile MirrorPeer mirrorPeer;

    public NbdServerContext(final NbdServerConfig config, final ExportRegistry exports,
                            final Executor storageExecutor) {
        this(config, exports, storageExecutor, null);
    }

    /** @param tls {@code null} when TLS is off. */
    public NbdServerContext(final NbdServerConfig config, final ExportRegistry exports,
                            final Executor storageExecutor, final NbdTls tls) {
        this.config = config;
        this.exports = exports;
        this.storageExecutor = storageExecutor;
        this.tls = tls;
        this.buffers = new BufferBudget(config.bufferedBytesLimit());
    }

    /** Request buffers held across all connections; see {@link NbdServerConfig#maxBufferedBytes}. */
    public BufferBudget buffers() {
        return buffers;
    }

    /** TLS for STARTTLS, or {@code null} when it is off. */
    public NbdTls tls() {
        return tls;
    }

    public NbdServerConfig config() {
        return config;
    }

    public ExportRegistry exports() {
        return exports;
    }

    /** Where disc I/O runs; never an event loop. */
    public Executor storageExecutor() {
        return storageExecutor;
    }

    /** Who answers nbdtail's mirror option; {@code null}: the option is unsupported. */
    public MirrorPeer mirrorPeer() {
        return mirrorPeer;
    }

    public void mirrorPeer(final MirrorPeer peer) {
        this.mirrorPeer = peer;
    }

    public boolean shuttingDown() {
        return shuttingDown;
    }

    public void beginShutdown() {
        shuttingDown = true;
    }
}
