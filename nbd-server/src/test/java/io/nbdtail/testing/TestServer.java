package io.nbdtail.testing;

import io.nbdtail.nbd.engine.Export;
import io.nbdtail.nbd.engine.NbdServerConfig;
import io.nbdtail.nbd.engine.SimpleExportRegistry;
import io.nbdtail.nbd.transport.NbdServer;
import io.nbdtail.storage.StorageExecutor;
import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeService;

import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * An nbdtail server in the test's JVM, on an ephemeral loopback port, over a real data directory. Real clients
 * connect to {@link #uri(String)}.
 */
public final class TestServer implements AutoCloseable {
    private final VolumeService volumes;
    private final StorageExecutor storage;
    private final SimpleExportRegistry exports = new SimpleExportRegistry();
    private final List<Volume> opened = new ArrayList<>();
    private final NbdServer server;
    private final InetSocketAddress address;

    private TestServer(final Path dataDir, final NbdServerConfig config) throws Exception {
        this.volumes = VolumeService.open(dataDir);
        this.storage = NbdServer.storageExecutor(config.storageThreads);
        this.server = new NbdServer(config, exports, storage);
        this.address = server.bind("127.0.0.1", 0);
    }

    public static TestServer start(final Path dataDir) throws Exception {
        final NbdServerConfig config = new NbdServerConfig();
        config.eventLoopThreads = 2;
        config.storageThreads = 4;
        return start(dataDir, config);
    }

    public static TestServer start(final Path dataDir, final NbdServerConfig config) throws Exception {
        return new TestServer(dataDir, config.conclude());
    }

    /** Creates a sparse file volume and serves it. */
    public Volume createVolume(final String name, final long size) throws Exception {
        return createVolume(name, size, "", false);
    }

    public Volume createVolume(final String name, final long size, final String description, final boolean readOnly)
        throws Exception {
        volumes.create(name, size, null, description, readOnly);
        final Volume volume = volumes.openVolume(name, storage);
        opened.add(volume);
        exports.add(Export.of(volume));
        return volume;
    }

    public VolumeService volumes() {
        return volumes;
    }

    public NbdServer server() {
        return server;
    }

    public Export export(final String name) {
        return exports.find(name, null);
    }

    public int port() {
        return address.getPort();
    }

    /** {@code nbd://127.0.0.1:PORT/NAME}. */
    public String uri(final String export) {
        return "nbd://127.0.0.1:" + port() + "/" + export;
    }

    /** The volume's backing file, to compare against what clients see. */
    public Path dataFile(final String name) {
        return volumes.dataDir().resolve("volumes").resolve(name).resolve("data.raw");
    }

    @Override
    public void close() throws Exception {
        server.shutdown(10_000);
        server.close();
        for (final Volume v : opened) {
            v.close();
        }
        storage.shutdown(5_000);
    }
}
