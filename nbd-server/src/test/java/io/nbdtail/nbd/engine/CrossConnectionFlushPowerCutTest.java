package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.client.NbdClient;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.transport.NbdServer;
import io.nbdtail.storage.PowerCutRecorder;
import io.nbdtail.storage.StorageExecutor;
import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeService;
import io.netty.buffer.Unpooled;
import io.netty.channel.EventLoopGroup;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * reliability.md C5: the server advertises {@code CAN_MULTI_CONN}, so a FLUSH on one connection must make durable
 * every write that completed on any connection before it. Connection A writes (no FUA, no flush of its own),
 * connection B flushes, A writes more; every change to the volume's files is recorded
 * ({@link PowerCutRecorder}), and the disc is rebuilt for power cuts after B's flush, with any subset of what
 * was not synced yet and torn writes. In every such state each block A completed before the flush reads back;
 * cut just before the flush, they are gone, which shows that the harness would notice.
 */
class CrossConnectionFlushPowerCutTest {
    private static final long SIZE = 64L << 20;
    private static final int BLOCK = 256 << 10;
    private static final int BLOCKS = 8;
    private static final long STRIDE = 4L << 20;
    private static final int STATES = 40;

    @TempDir
    Path tmp;

    @Test
    void writesCompletedOnOneConnectionSurviveAPowerCutAfterAFlushOnAnother() throws Exception {
        final Path live = tmp.resolve("live");
        VolumeService.open(live).create("v", SIZE, null, "", false);
        final PowerCutRecorder recorder = new PowerCutRecorder(live);
        final VolumeService service = VolumeService.open(live, recorder);
        final NbdServerConfig config = new NbdServerConfig();
        config.eventLoopThreads = 2;
        config.storageThreads = 4;
        config.conclude();
        final StorageExecutor storage = NbdServer.storageExecutor(config.storageThreads);
        final EventLoopGroup group = NbdClient.newGroup(1);
        final Random random = new Random(5);
        final byte[][] blocks = new byte[BLOCKS][BLOCK];
        final int beforeFlush;
        final int afterFlush;
        try (Volume volume = service.openVolume("v", storage)) {
            final SimpleExportRegistry exports = new SimpleExportRegistry();
            exports.add(Export.of(volume));
            final NbdServer server = new NbdServer(config, exports, storage);
            try {
                final InetSocketAddress address = server.bind("127.0.0.1", 0);
                try (NbdClient a = connect(group, address); NbdClient b = connect(group, address)) {
                    assertThat(a.transmissionFlags() & NbdConstants.TFLAG_CAN_MULTI_CONN).isNotZero();
                    for (int i = 0; i < BLOCKS; i++) {
                        random.nextBytes(blocks[i]);
                        a.write(i * STRIDE, Unpooled.wrappedBuffer(blocks[i]), false).get(30, TimeUnit.SECONDS);
                    }
                    beforeFlush = recorder.size();
                    b.flush().get(30, TimeUnit.SECONDS);
                    afterFlush = recorder.size();
                    final byte[] later = new byte[BLOCK];
                    random.nextBytes(later);
                    a.write(BLOCKS * STRIDE, Unpooled.wrappedBuffer(later), false).get(30, TimeUnit.SECONDS);
                }
            } finally {
                server.shutdown(10_000);
                server.close();
            }
        } finally {
            storage.shutdown(5_000);
            group.shutdownGracefully(0, 1, TimeUnit.SECONDS).sync();
        }

        assertThat(present(recorder, beforeFlush, PowerCutRecorder.NOTHING_UNSYNCED, blocks, "before the flush"))
            .as("a cut before B's flush, with nothing unsynced on the disc, loses A's writes").isLessThan(BLOCKS);
        assertThat(present(recorder, afterFlush, PowerCutRecorder.NOTHING_UNSYNCED, blocks, "at the flush"))
            .isEqualTo(BLOCKS);
        final Random states = new Random(6);
        for (int state = 0; state < STATES; state++) {
            final int cut = afterFlush + states.nextInt(recorder.size() - afterFlush + 1);
            assertThat(present(recorder, cut, PowerCutRecorder.random(new Random(state)), blocks, "state " + state))
                .as("state %d (cut %d of %d)", state, cut, recorder.size()).isEqualTo(BLOCKS);
        }
    }

    /** How many of {@code blocks} a disc in the given crash state holds. */
    private int present(final PowerCutRecorder recorder, final int cut, final PowerCutRecorder.Chooser chooser,
                        final byte[][] blocks, final String name) throws Exception {
        final Path image = tmp.resolve("image-" + name.replace(' ', '-'));
        recorder.build(image, cut, chooser, i -> false);
        int present = 0;
        try (Volume opened = VolumeService.open(image).openVolume("v", Runnable::run)) {
            final ByteBuffer buffer = ByteBuffer.allocateDirect(BLOCK);
            final byte[] read = new byte[BLOCK];
            for (int i = 0; i < blocks.length; i++) {
                buffer.clear();
                opened.device().read(buffer, i * STRIDE);
                buffer.flip().get(read);
                if (Arrays.equals(read, blocks[i])) {
                    present++;
                }
            }
        }
        return present;
    }

    private static NbdClient connect(final EventLoopGroup group, final InetSocketAddress address) throws Exception {
        final NbdClient.Options options = new NbdClient.Options();
        options.exportName = "v";
        return NbdClient.connect(group, address, options);
    }
}
