package io.nbdtail.server;

import io.nbdtail.nbd.engine.Export;
import io.nbdtail.nbd.transport.NbdServer;
import io.netty.channel.Channel;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

/**
 * Per-volume service addresses: a volume with an {@code ADDR:PORT} in its ownership record gets its own
 * listener while this tail serves it, bound with IP_FREEBIND so it can be bound before the address is moved to
 * this host. The mirror's destination binds it right after its cutover record; the source closes its listener
 * when it withdraws the volume. On one host (tests) the destination's bind waits until the source has let go.
 */
public final class ServiceAddresses implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(ServiceAddresses.class);
    /** How long a bind keeps retrying while the address is still held (by the source, on the same host). */
    private static final long BIND_PATIENCE_MILLIS = 60_000;

    private final NbdServer nbd;
    private final VolumeManager volumes;
    private final ConcurrentHashMap<String, Channel> listeners = new ConcurrentHashMap<>();
    private final ExecutorService binders = Executors.newVirtualThreadPerTaskExecutor();
    private volatile boolean closed;

    public ServiceAddresses(final NbdServer nbd, final VolumeManager volumes) {
        this.nbd = nbd;
        this.volumes = volumes;
    }

    /** Binds the addresses of every served volume that has one (at start). */
    public void bindAll() {
        for (final Export export : volumes.all()) {
            if (!volumes.isHeld(export.name())) {
                volumeServed(export.name());
            }
        }
    }

    /** Sets or clears ({@code null}) a volume's service address, stores it, and (re)binds it. */
    public void set(final String name, final String address) throws Exception {
        if (address != null) {
            parse(address);
        }
        volumes.recordOwnership(name, volumes.ownership(name).withServiceAddress(address));
        unbind(name);
        if (address != null && !volumes.isHeld(name)) {
            bind(name, address, 0);
        }
    }

    /** The volume is served here from now on: bind its address, retrying in the background while it is taken. */
    public void volumeServed(final String name) {
        final String address = volumes.ownership(name).serviceAddress();
        if (address == null || closed) {
            return;
        }
        try {
            bind(name, address, 0);
        } catch (final Exception e) {
            LOG.info("volume {}: {} is still taken ({}); retrying in the background", name, address, e.toString());
            binders.execute(() -> {
                try {
                    bind(name, address, BIND_PATIENCE_MILLIS);
                } catch (final Exception again) {
                    LOG.error("volume {}: cannot bind its service address {}: {}; clients cannot reach it there",
                        name, address, again.toString());
                }
            });
        }
    }

    /** The volume leaves this tail: close its listener so the next owner can take the address. */
    public void volumeWithdrawn(final String name) {
        unbind(name);
    }

    private void unbind(final String name) {
        final Channel old = listeners.remove(name);
        if (old != null) {
            old.close().awaitUninterruptibly(5, TimeUnit.SECONDS);
            LOG.info("volume {}: released {}", name, old.localAddress());
        }
    }

    private void bind(final String name, final String address, final long patienceMillis) throws Exception {
        final String[] hostPort = parse(address);
        final long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(patienceMillis);
        while (true) {
            try {
                final Channel channel = nbd.bindExport(hostPort[0], Integer.parseInt(hostPort[1]), name, true);
                final Channel old = listeners.put(name, channel);
                if (old != null) {
                    old.close();
                }
                return;
            } catch (final Exception e) {
                if (closed || System.nanoTime() >= deadline || volumes.isHeld(name)) {
                    throw e;
                }
                Thread.sleep(20);
            }
        }
    }

    static String[] parse(final String address) {
        final int colon = address.lastIndexOf(':');
        if (colon <= 0 || colon == address.length() - 1) {
            throw new IllegalArgumentException("service address '" + address + "' is not ADDR:PORT");
        }
        final String port = address.substring(colon + 1);
        try {
            final int p = Integer.parseInt(port);
            if (p <= 0 || p > 65535) {
                throw new NumberFormatException();
            }
        } catch (final NumberFormatException e) {
            throw new IllegalArgumentException("service address '" + address + "' has no valid port");
        }
        return new String[] {address.substring(0, colon).replace("[", "").replace("]", ""), port};
    }

    @Override
    public void close() {
        closed = true;
        binders.shutdownNow();
        for (final String name : listeners.keySet()) {
            unbind(name);
        }
    }
}
