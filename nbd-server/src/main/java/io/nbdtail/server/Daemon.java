package io.nbdtail.server;

import io.nbdtail.nbd.tls.NbdTls;
import io.nbdtail.volume.VolumeException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import sun.misc.Signal;

import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;

/**
 * {@code nbdtail serve}: runs one {@link NbdTail} on a data directory until SIGTERM or SIGINT, then stops it
 * gracefully and exits 0.
 */
public final class Daemon {
    private static final Logger LOG = LoggerFactory.getLogger(Daemon.class);

    private Daemon() {
    }

    /** Command-line overrides of the configuration file; {@code null} fields keep the file's values. */
    public record Options(Path dataDir, String listen, String apiListen, Path apiTokenFile, Path configFile) {
    }

    /** @see #run(Options) */
    public static int run(final Path dataDir, final String listen, final Path configFile) {
        return run(new Options(dataDir, listen, null, null, configFile));
    }

    /**
     * Runs the server in the calling thread until a signal stops it.
     *
     * @return the process exit code: 0 after a graceful stop, 1 if it could not serve, 2 for a bad configuration.
     */
    public static int run(final Options options) {
        final ServerConfig config;
        try {
            config = options.configFile() != null ? ServerConfig.load(options.configFile()) : new ServerConfig();
            if (options.listen() != null) {
                config.listen = options.listen();
            }
            if (options.apiListen() != null) {
                config.api.listen = options.apiListen();
            }
            if (options.apiTokenFile() != null) {
                config.api.tokenFile = options.apiTokenFile().toString();
            }
            ServerConfig.parseListen(config.listen);
            if (config.api.enabled()) {
                ServerConfig.parseListen(config.api.listen);
            }
            config.api.defaultAllow();
            config.nbd.conclude();
            // Loads the certificates or keys once here so that a TLS mistake is a configuration error (exit 2);
            // the NBD server loads them again when it starts.
            NbdTls.create(config.nbd.tls);
        } catch (final Exception e) {
            System.err.println("nbdtail: " + e.getMessage());
            return 2;
        }
        final CountDownLatch stop = new CountDownLatch(1);
        Signal.handle(new Signal("TERM"), s -> stop.countDown());
        Signal.handle(new Signal("INT"), s -> stop.countDown());

        final NbdTail tail;
        try {
            tail = NbdTail.open(options.dataDir(), config);
        } catch (final VolumeException e) {
            System.err.println("nbdtail: " + e.getMessage());
            return 1;
        } catch (final Exception e) {
            System.err.println("nbdtail: cannot open " + options.dataDir() + ": " + e.getMessage());
            return 1;
        }
        try {
            final Integer inherited = SocketActivation.listenFd();
            if (inherited != null) {
                tail.listenInherited(inherited);
            } else {
                final ServerConfig.HostPort hp = ServerConfig.parseListen(config.listen);
                tail.listen(hp.host(), hp.port());
            }
            if (config.api.enabled()) {
                final ServerConfig.HostPort api = ServerConfig.parseListen(config.api.listen);
                tail.startApi(api.host(), api.port());
            }
            LOG.info("nbdtail serving {} volume(s) from {}", tail.volumes().all().size(), tail.dataDir());
            stop.await();
            LOG.info("shutting down: finishing requests in flight");
            return 0;
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
            return 1;
        } catch (final Exception e) {
            System.err.println("nbdtail: cannot serve: " + e.getMessage());
            LOG.debug("start-up failure", e);
            return 1;
        } finally {
            try {
                tail.close();
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            LOG.info("stopped");
        }
    }
}
