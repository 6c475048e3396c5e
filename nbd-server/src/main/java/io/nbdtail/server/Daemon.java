package io.nbdtail.server;

import io.nbdtail.nbd.engine.Export;
import io.nbdtail.nbd.engine.SimpleExportRegistry;
import io.nbdtail.nbd.transport.NbdServer;
import io.nbdtail.storage.StorageExecutor;
import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeException;
import io.nbdtail.volume.VolumeMetadata;
import io.nbdtail.volume.VolumeService;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import sun.misc.Signal;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;

/**
 * {@code nbdtail serve}: opens every volume of a data directory and serves each as an NBD export named after
 * it, until SIGTERM or SIGINT.
 *
 * <p>Start-up order: lock the data directory (one server per directory), open and lock every volume, then
 * listen. Shutdown order is the reverse: stop listening, let connections answer what they have read, sync and
 * close every volume, release the locks, exit 0.
 */
public final class Daemon {
    private static final Logger LOG = LoggerFactory.getLogger(Daemon.class);

    private final Path dataDir;
    private final ServerConfig config;
    private final CountDownLatch stop = new CountDownLatch(1);

    private Daemon(final Path dataDir, final ServerConfig config) {
        this.dataDir = dataDir;
        this.config = config;
    }

    /**
     * Runs the server in the calling thread until a signal stops it.
     *
     * @param listen     overrides the configuration's listen address; ignored under socket activation.
     * @param configFile optional JSON configuration.
     * @return the process exit code.
     */
    public static int run(final Path dataDir, final String listen, final Path configFile) {
        final ServerConfig config;
        try {
            config = configFile != null ? ServerConfig.load(configFile) : new ServerConfig();
            if (listen != null) {
                config.listen = listen;
            }
            ServerConfig.parseListen(config.listen);
            config.nbd.conclude();
        } catch (final Exception e) {
            System.err.println("nbdtail: " + e.getMessage());
            return 2;
        }
        final Daemon daemon = new Daemon(dataDir, config);
        Signal.handle(new Signal("TERM"), s -> daemon.stop.countDown());
        Signal.handle(new Signal("INT"), s -> daemon.stop.countDown());
        return daemon.serve();
    }

    private int serve() {
        final VolumeService volumes;
        final AutoCloseable dirLock;
        try {
            volumes = VolumeService.open(dataDir);
            dirLock = volumes.lockDataDirectory();
        } catch (final VolumeException e) {
            System.err.println("nbdtail: " + e.getMessage());
            return 1;
        }
        final List<Volume> opened = new ArrayList<>();
        final StorageExecutor storage = new StorageExecutor(config.nbd.storageThreads);
        final SimpleExportRegistry exports = new SimpleExportRegistry();
        NbdServer server = null;
        try {
            for (final VolumeMetadata meta : volumes.list()) {
                try {
                    final Volume volume = volumes.openVolume(meta.name(), storage);
                    opened.add(volume);
                    exports.add(Export.of(volume));
                } catch (final VolumeException e) {
                    if (e.code() == VolumeException.Code.LOCKED) {
                        System.err.println("nbdtail: " + e.getMessage());
                        return 1;
                    }
                    LOG.error("volume {} is not served: {}", meta.name(), e.getMessage());
                }
            }
            server = new NbdServer(config.nbd, exports, storage);
            final Integer inherited = SocketActivation.listenFd();
            if (inherited != null) {
                server.serveInherited(inherited);
            } else {
                final ServerConfig.HostPort hp = ServerConfig.parseListen(config.listen);
                server.bind(hp.host(), hp.port());
            }
            LOG.info("nbdtail serving {} volume(s) from {}", opened.size(), dataDir.toAbsolutePath());
            stop.await();
            LOG.info("shutting down: finishing requests in flight");
            server.shutdown(config.nbd.shutdownTimeoutMillis);
            return 0;
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            return 1;
        } catch (final Exception e) {
            System.err.println("nbdtail: cannot serve: " + e.getMessage());
            LOG.debug("start-up failure", e);
            return 1;
        } finally {
            if (server != null) {
                server.close();
            }
            for (final Volume volume : opened) {
                volume.close();
            }
            try {
                storage.shutdown(5_000);
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            try {
                dirLock.close();
            } catch (final Exception e) {
                LOG.warn("releasing the data directory lock failed: {}", e.toString());
            }
            LOG.info("stopped");
        }
    }
}
