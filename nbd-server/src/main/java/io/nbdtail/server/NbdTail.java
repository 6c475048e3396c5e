package io.nbdtail.server;

import io.nbdtail.api.ApiServer;
import io.nbdtail.api.OperationManager;
import io.nbdtail.nbd.tls.ClientTls;
import io.nbdtail.nbd.transport.NbdServer;
import io.nbdtail.storage.StorageExecutor;
import io.nbdtail.volume.VolumeException;
import io.nbdtail.volume.VolumeService;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Instant;

/**
 * One running nbdtail: the data directory (locked), its volumes, the NBD listener and the control API. The
 * daemon runs one; integration tests run one in-process.
 *
 * <p>Start order: lock the data directory, open the volumes, listen for NBD, start the API. {@link #close()}
 * goes backwards: stop the API, drain the NBD connections, sync and close the volumes, unlock.
 */
public final class NbdTail implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(NbdTail.class);

    private final ServerConfig config;
    private final Path dataDir;
    private final VolumeService volumes;
    private final AutoCloseable dirLock;
    private final StorageExecutor storage;
    private final VolumeManager manager;
    private final NbdServer nbd;
    private final OperationManager operations;
    private final MirrorService mirrors;
    private final ServiceAddresses addresses;
    private final Instant started = Instant.now();
    private final StallWatchdog watchdog = new StallWatchdog(1_000);
    private ApiServer api;

    private NbdTail(final Path dataDir, final ServerConfig config) throws Exception {
        // Checked before anything is opened: a bad mirror.tls fails the start without leaving a lock behind.
        final ClientTls mirrorTls = ClientTls.create(config.mirror.tls, "mirror.tls");
        this.config = config;
        this.dataDir = dataDir.toAbsolutePath().normalize();
        this.volumes = VolumeService.open(dataDir);
        this.dirLock = volumes.lockDataDirectory();
        this.storage = NbdServer.storageExecutor(config.nbd.storageThreads);
        this.manager = new VolumeManager(volumes, storage, config.api.defaultAllow());
        this.nbd = new NbdServer(config.nbd, manager, storage);
        this.operations = new OperationManager(this.dataDir, VolumeService.mapper());
        this.mirrors = new MirrorService(manager, config.mirror, mirrorTls, nbd.context().tls());
        this.addresses = new ServiceAddresses(nbd, manager);
        this.mirrors.addresses(addresses);
        this.nbd.context().mirrorPeer(mirrors);
    }

    /**
     * Opens the data directory and its volumes; does not listen yet.
     *
     * @param config already concluded.
     */
    public static NbdTail open(final Path dataDir, final ServerConfig config) throws Exception {
        final NbdTail tail = new NbdTail(dataDir, config);
        try {
            tail.manager.openAll();
        } catch (final VolumeException e) {
            tail.close();
            throw e;
        }
        return tail;
    }

    /** Listens for NBD on {@code host:port} (port 0: any free port). */
    public InetSocketAddress listen(final String host, final int port) throws InterruptedException {
        final InetSocketAddress bound = nbd.bind(host, port);
        addresses.bindAll();
        return bound;
    }

    /** Serves NBD on an inherited socket (systemd socket activation). */
    public void listenInherited(final int fd) throws Exception {
        nbd.serveInherited(fd);
        addresses.bindAll();
    }

    /** Starts the control API on {@code host:port}; returns the bound address. */
    public InetSocketAddress startApi(final String host, final int port) throws Exception {
        api = ApiServer.start(this, host, port);
        return api.address();
    }

    public ServerConfig config() {
        return config;
    }

    public Path dataDir() {
        return dataDir;
    }

    public VolumeManager volumes() {
        return manager;
    }

    public NbdServer nbd() {
        return nbd;
    }

    public OperationManager operations() {
        return operations;
    }

    public MirrorService mirrors() {
        return mirrors;
    }

    public ServiceAddresses addresses() {
        return addresses;
    }

    public StallWatchdog watchdog() {
        return watchdog;
    }

    public Instant started() {
        return started;
    }

    public ApiServer api() {
        return api;
    }

    /**
     * Graceful stop: the API first (new calls get 503 while it closes), then NBD connections answer what they
     * have read and close, then every volume is synced and closed and the data directory unlocked.
     */
    @Override
    public void close() throws InterruptedException {
        nbd.context().beginShutdown();
        if (api != null) {
            api.close();
        }
        operations.shutdown(5_000);
        mirrors.close();
        addresses.close();
        nbd.shutdown(config.nbd.shutdownTimeoutMillis);
        nbd.close();
        // Storage threads finish what they have before the volumes (and their descriptors) close.
        storage.shutdown(config.nbd.shutdownTimeoutMillis);
        manager.close();
        try {
            dirLock.close();
        } catch (final Exception e) {
            LOG.warn("releasing the data directory lock failed: {}", e.toString());
        }
        watchdog.close();
    }
}
