package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.engine.NbdTestSupport.Chunk;
import io.nbdtail.nbd.engine.NbdTestSupport.OptionReply;
import io.nbdtail.nbd.engine.NbdTestSupport.Peer;
import io.nbdtail.nbd.engine.NbdTestSupport.SimpleReply;
import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdError;
import io.nbdtail.volume.Volume;
import io.netty.channel.embedded.EmbeddedChannel;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;

import static io.nbdtail.nbd.engine.NbdTestSupport.DISK_SIZE;
import static io.nbdtail.nbd.engine.NbdTestSupport.clientFlags;
import static io.nbdtail.nbd.engine.NbdTestSupport.infoData;
import static io.nbdtail.nbd.engine.NbdTestSupport.metaContextData;
import static io.nbdtail.nbd.engine.NbdTestSupport.option;
import static io.nbdtail.nbd.engine.NbdTestSupport.pattern;
import static io.nbdtail.nbd.engine.NbdTestSupport.request;
import static io.nbdtail.nbd.protocol.NbdConstants.*;
import static org.assertj.core.api.Assertions.assertThat;

class NbdTransmissionHandlerTest {
    private static final int READ = NbdCommand.READ.type();
    private static final int WRITE = NbdCommand.WRITE.type();
    private static final int DISC = NbdCommand.DISC.type();
    private static final int FLUSH = NbdCommand.FLUSH.type();
    private static final int TRIM = NbdCommand.TRIM.type();
    private static final int CACHE = NbdCommand.CACHE.type();
    private static final int WRITE_ZEROES = NbdCommand.WRITE_ZEROES.type();
    private static final int BLOCK_STATUS = NbdCommand.BLOCK_STATUS.type();

    private static final int EPERM = NbdError.EPERM.code();
    private static final int EINVAL = NbdError.EINVAL.code();
    private static final int ENOSPC = NbdError.ENOSPC.code();

    @TempDir
    Path dir;

    private Volume volume;
    private SimpleExportRegistry registry;
    private Export disk;
    private NbdServerContext context;
    private final List<Peer> peers = new ArrayList<>();

    @BeforeEach
    void setUp() throws Exception {
        volume = NbdTestSupport.openVolume(dir, "disk", "test disk");
        registry = new SimpleExportRegistry();
        disk = Export.of(volume);
        registry.add(disk);
        registry.add(new Export("ro", "read-only view", volume, true));
        context = new NbdServerContext(new NbdServerConfig().conclude(), registry, Runnable::run);
    }

    @AfterEach
    void tearDown() {
        for (final Peer p : peers) {
            p.close();
        }
        volume.close();
    }

    /** Handshake up to a successful GO; returns the client end in transmission. */
    private Peer open(final NbdServerContext ctx, final String export, final boolean structured,
                      final String metaContextExport) {
        final Peer peer = new Peer(new EmbeddedChannel(new NbdHandshakeHandler(ctx)));
        peers.add(peer);
        peer.greeting();
        peer.send(clientFlags(CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES));
        if (structured) {
            peer.send(option(OPT_STRUCTURED_REPLY));
            assertThat(peer.optionReply().type()).isEqualTo(REP_ACK);
        }
        if (metaContextExport != null) {
            peer.send(option(OPT_SET_META_CONTEXT, metaContextData(metaContextExport, CONTEXT_BASE_ALLOCATION)));
            assertThat(peer.optionReply().type()).isEqualTo(REP_META_CONTEXT);
            assertThat(peer.optionReply().type()).isEqualTo(REP_ACK);
        }
        peer.send(option(OPT_GO, infoData(export)));
        OptionReply reply;
        do {
            reply = peer.optionReply();
            assertThat(reply.type()).isIn(REP_INFO, REP_ACK);
        } while (reply.type() != REP_ACK);
        assertThat(peer.available()).isZero();
        assertThat(peer.channel.pipeline().get("nbd-transmission")).isInstanceOf(NbdTransmissionHandler.class);
        return peer;
    }

    private Peer open(final boolean structured) {
        return open(context, "disk", structured, null);
    }

    private Peer openWithBaseAllocation() {
        return open(context, "disk", true, "disk");
    }

    private static void assertSimple(final SimpleReply reply, final long cookie, final int error) {
        assertThat(reply.cookie()).isEqualTo(cookie);
        assertThat(reply.error()).as("error of cookie %d", cookie).isEqualTo(error);
    }

    private static void assertErrorChunk(final Chunk chunk, final long cookie, final int error) {
        assertThat(chunk.cookie()).isEqualTo(cookie);
        assertThat(chunk.type()).isEqualTo(REPLY_TYPE_ERROR);
        assertThat(chunk.done()).isTrue();
        final ByteBuffer body = chunk.body();
        assertThat(body.getInt()).isEqualTo(error);
        final int messageLength = body.getShort() & 0xffff;
        assertThat(body.remaining()).isEqualTo(messageLength);
        assertThat(messageLength).isPositive();
    }

    private void write(final Peer peer, final long cookie, final long offset, final byte[] data) {
        peer.send(request(0, WRITE, cookie, offset, data.length, data));
        assertSimple(peer.simpleReply(0), cookie, 0);
    }

    private static byte[] readSimple(final Peer peer, final long cookie, final long offset, final int length) {
        peer.send(request(0, READ, cookie, offset, length));
        final SimpleReply reply = peer.simpleReply(length);
        assertSimple(reply, cookie, 0);
        return reply.data();
    }

    /** Extents of a BLOCK_STATUS chunk as {length, flags} pairs. */
    private static List<long[]> extents(final Chunk chunk) {
        assertThat(chunk.type()).isEqualTo(REPLY_TYPE_BLOCK_STATUS);
        assertThat(chunk.done()).isTrue();
        final ByteBuffer body = chunk.body();
        assertThat(body.getInt()).isEqualTo(NbdHandshakeHandler.BASE_ALLOCATION_ID);
        assertThat(body.remaining() % 8).isZero();
        final List<long[]> list = new ArrayList<>();
        while (body.hasRemaining()) {
            list.add(new long[] {body.getInt() & 0xffffffffL, body.getInt()});
        }
        return list;
    }

    // ---------------------------------------------------------------- READ and WRITE

    @Test
    void shouldReadBackWrittenBytesWithSimpleReplies() {
        final Peer peer = open(false);
        final byte[] data = pattern(4096, 1);

        write(peer, 1, 8192, data);

        assertThat(readSimple(peer, 2, 8192, 4096)).isEqualTo(data);
        assertThat(readSimple(peer, 3, 8192 + 100, 10)).isEqualTo(Arrays.copyOfRange(data, 100, 110));
        assertThat(disk.stats().bytesWritten()).isEqualTo(4096);
        assertThat(disk.stats().bytesRead()).isEqualTo(4106);
        assertThat(disk.stats().requests(NbdCommand.READ)).isEqualTo(2);
        assertThat(disk.stats().requests(NbdCommand.WRITE)).isEqualTo(1);
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldReadBackWrittenBytesAsOneDataChunkWithStructuredReplies() {
        final Peer peer = open(true);
        final byte[] data = pattern(4096, 2);
        write(peer, 1, 0, data);

        peer.send(request(0, READ, 2, 0, 4096));

        final Chunk chunk = peer.chunk();
        assertThat(chunk.cookie()).isEqualTo(2);
        assertThat(chunk.type()).isEqualTo(REPLY_TYPE_OFFSET_DATA);
        assertThat(chunk.done()).isTrue();
        final ByteBuffer body = chunk.body();
        assertThat(body.getLong()).isZero();
        assertThat(Arrays.copyOfRange(chunk.payload(), 8, chunk.payload().length)).isEqualTo(data);
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldReadNeverWrittenRegionAsHoleChunk() {
        final Peer peer = open(true);

        peer.send(request(0, READ, 5, 8L << 20, 65536));

        final Chunk chunk = peer.chunk();
        assertThat(chunk.cookie()).isEqualTo(5);
        assertThat(chunk.type()).isEqualTo(REPLY_TYPE_OFFSET_HOLE);
        assertThat(chunk.done()).isTrue();
        final ByteBuffer body = chunk.body();
        assertThat(chunk.payload()).hasSize(12);
        assertThat(body.getLong()).isEqualTo(8L << 20);
        assertThat(body.getInt()).isEqualTo(65536);
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldSplitReadIntoDataAndHoleChunks() {
        final Peer peer = open(true);
        final byte[] data = pattern(4096, 3);
        write(peer, 1, 0, data);

        peer.send(request(0, READ, 2, 0, 3 * 4096));

        final Chunk first = peer.chunk();
        assertThat(first.type()).isEqualTo(REPLY_TYPE_OFFSET_DATA);
        assertThat(first.done()).isFalse();
        assertThat(first.body().getLong()).isZero();
        assertThat(Arrays.copyOfRange(first.payload(), 8, first.payload().length)).isEqualTo(data);
        final Chunk second = peer.chunk();
        assertThat(second.type()).isEqualTo(REPLY_TYPE_OFFSET_HOLE);
        assertThat(second.done()).isTrue();
        assertThat(second.cookie()).isEqualTo(2);
        final ByteBuffer hole = second.body();
        assertThat(hole.getLong()).isEqualTo(4096);
        assertThat(hole.getInt()).isEqualTo(2 * 4096);
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldSendExactlyOneDataChunkForDfRead() {
        final Peer peer = open(true);
        final byte[] data = pattern(4096, 4);
        write(peer, 1, 0, data);

        peer.send(request(CMD_FLAG_DF, READ, 2, 0, 3 * 4096));

        final Chunk chunk = peer.chunk();
        assertThat(chunk.type()).isEqualTo(REPLY_TYPE_OFFSET_DATA);
        assertThat(chunk.done()).isTrue();
        assertThat(chunk.payload()).hasSize(8 + 3 * 4096);
        assertThat(chunk.body().getLong()).isZero();
        final byte[] expected = new byte[3 * 4096];
        System.arraycopy(data, 0, expected, 0, 4096);
        assertThat(Arrays.copyOfRange(chunk.payload(), 8, chunk.payload().length)).isEqualTo(expected);
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldSendDataChunkForDfReadOfHole() {
        final Peer peer = open(true);

        peer.send(request(CMD_FLAG_DF, READ, 2, 1 << 20, 4096));

        final Chunk chunk = peer.chunk();
        assertThat(chunk.type()).isEqualTo(REPLY_TYPE_OFFSET_DATA);
        assertThat(chunk.done()).isTrue();
        assertThat(chunk.payload()).isEqualTo(ByteBuffer.allocate(8 + 4096).putLong(1 << 20).array());
    }

    @Test
    void shouldRejectDfWithoutStructuredReplies() {
        final Peer peer = open(false);

        peer.send(request(CMD_FLAG_DF, READ, 2, 0, 4096));

        assertSimple(peer.simpleReply(4096), 2, EINVAL);
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldAnswerZeroLengthReadAndWrite() {
        final Peer simple = open(false);
        simple.send(request(0, READ, 1, 0, 0), request(0, WRITE, 2, 0, 0));
        assertSimple(simple.simpleReply(0), 1, 0);
        assertSimple(simple.simpleReply(0), 2, 0);
        assertThat(simple.available()).isZero();

        final Peer structured = open(true);
        structured.send(request(0, READ, 3, DISK_SIZE, 0));
        final Chunk done = structured.chunk();
        assertThat(done.cookie()).isEqualTo(3);
        assertThat(done.type()).isEqualTo(REPLY_TYPE_NONE);
        assertThat(done.done()).isTrue();
        assertThat(done.payload()).isEmpty();
    }

    @Test
    void shouldReadAndWriteLastByteOfTheExport() {
        final Peer peer = open(false);

        write(peer, 1, DISK_SIZE - 1, new byte[] {42});

        assertThat(readSimple(peer, 2, DISK_SIZE - 1, 1)).containsExactly(42);
    }

    // ---------------------------------------------------------------- bad requests

    @Test
    void shouldAnswerUnknownCommandWithEinvalAndStayOpen() {
        final Peer peer = open(false);

        peer.send(request(0, 99, 0xCAFEBABEL, 0, 4096));

        assertSimple(peer.simpleReply(0), 0xCAFEBABEL, EINVAL);
        assertThat(peer.channel.isOpen()).isTrue();
        assertThat(readSimple(peer, 2, 0, 512)).isEqualTo(new byte[512]);
        assertThat(disk.stats().errors(NbdError.EINVAL)).isEqualTo(1);
        assertThat(disk.stats().requests(NbdCommand.UNKNOWN)).isEqualTo(1);
    }

    @Test
    void shouldAnswerUnknownCommandWithSimpleReplyEvenWithStructuredReplies() {
        final Peer peer = open(true);

        peer.send(request(0, 0xFFFF, 7, 0, 0));

        assertSimple(peer.simpleReply(0), 7, EINVAL);
    }

    @Test
    void shouldRejectReadWithReqOneFlag() {
        final Peer peer = open(false);

        peer.send(request(CMD_FLAG_REQ_ONE, READ, 3, 0, 512));

        assertSimple(peer.simpleReply(512), 3, EINVAL);
        assertThat(peer.available()).isZero();
        assertThat(disk.stats().errors(NbdError.EINVAL)).isEqualTo(1);
    }

    @Test
    void shouldAnswerBadReadWithErrorChunkWithStructuredReplies() {
        final Peer peer = open(true);

        peer.send(request(CMD_FLAG_REQ_ONE, READ, 3, 0, 512));

        assertErrorChunk(peer.chunk(), 3, EINVAL);
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldRejectUnknownFlagBits() {
        final Peer peer = open(false);

        peer.send(request(0x8000, WRITE, 4, 0, 4, new byte[] {1, 2, 3, 4}), request(0x0100, FLUSH, 5, 0, 0));

        assertSimple(peer.simpleReply(0), 4, EINVAL);
        assertSimple(peer.simpleReply(0), 5, EINVAL);
        // the refused WRITE did not reach the disc
        assertThat(readSimple(peer, 6, 0, 4)).isEqualTo(new byte[4]);
    }

    @Test
    void shouldRejectReadPastEnd() {
        final Peer peer = open(false);

        peer.send(request(0, READ, 1, DISK_SIZE - 512, 1024), request(0, READ, 2, DISK_SIZE, 1),
            request(0, READ, 3, DISK_SIZE + 4096, 0));

        assertSimple(peer.simpleReply(1024), 1, EINVAL);
        assertSimple(peer.simpleReply(1), 2, EINVAL);
        assertSimple(peer.simpleReply(0), 3, EINVAL);
        assertThat(peer.available()).isZero();
        assertThat(peer.channel.isOpen()).isTrue();
    }

    @Test
    void shouldRejectWritePastEndWithEnospcAndConsumeItsPayload() {
        final Peer peer = open(false);
        final byte[] payload = new byte[1024];
        // The payload holds what looks like a request: it must not be decoded as one.
        System.arraycopy(request(0, READ, 666, 0, 8), 0, payload, 0, 28);

        peer.send(request(0, WRITE, 1, DISK_SIZE - 512, 1024, payload), request(0, READ, 2, 0, 8));

        assertSimple(peer.simpleReply(0), 1, ENOSPC);
        final SimpleReply read = peer.simpleReply(8);
        assertSimple(read, 2, 0);
        assertThat(peer.available()).isZero();
        assertThat(disk.stats().errors(NbdError.ENOSPC)).isEqualTo(1);
    }

    @Test
    void shouldRejectOffsetsNearTwoToTheSixtyFour() {
        final Peer peer = open(false);
        final long nearEnd = 0xFFFFFFFFFFFFF000L; // 2^64 - 4096: offset + length wraps around

        peer.send(request(0, READ, 1, nearEnd, 4096),
            request(0, READ, 2, nearEnd, 8192),
            request(0, WRITE, 3, nearEnd, 8, new byte[8]),
            request(0, WRITE_ZEROES, 4, nearEnd, 8192),
            request(0, TRIM, 5, nearEnd, 8192),
            request(0, CACHE, 6, Long.MIN_VALUE, 1),
            request(0, READ, 7, Long.MAX_VALUE, 1));

        assertSimple(peer.simpleReply(4096), 1, EINVAL);
        assertSimple(peer.simpleReply(8192), 2, EINVAL);
        assertSimple(peer.simpleReply(0), 3, ENOSPC);
        assertSimple(peer.simpleReply(0), 4, ENOSPC);
        assertSimple(peer.simpleReply(0), 5, EINVAL);
        assertSimple(peer.simpleReply(0), 6, EINVAL);
        assertSimple(peer.simpleReply(1), 7, EINVAL);
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldRejectReadLongerThanMaxPayload() throws Exception {
        final NbdServerConfig config = new NbdServerConfig();
        config.maxPayload = 1 << 20;
        config.maxDiscardedPayload = 2 << 20;
        final Peer peer = open(new NbdServerContext(config.conclude(), registry, Runnable::run), "disk", false, null);

        peer.send(request(0, READ, 1, 0, (1 << 20) + 1), request(0, READ, 2, 0, 1 << 20));

        assertSimple(peer.simpleReply(0), 1, EINVAL);
        assertSimple(peer.simpleReply(1 << 20), 2, 0);
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldRejectWriteLongerThanMaxPayloadAndKeepStreamInStep() {
        final NbdServerConfig config = new NbdServerConfig();
        config.maxPayload = 1 << 20;
        config.maxDiscardedPayload = 2 << 20;
        final Peer peer = open(new NbdServerContext(config.conclude(), registry, Runnable::run), "disk", false, null);
        final byte[] payload = pattern((1 << 20) + 1, 9);

        peer.send(request(0, WRITE, 1, 0, payload.length, payload), request(0, READ, 2, 0, 16));

        assertSimple(peer.simpleReply(0), 1, EINVAL);
        assertThat(peer.simpleReply(16).data()).isEqualTo(new byte[16]);
        assertThat(peer.channel.isOpen()).isTrue();
    }

    @Test
    void shouldCloseWhenWriteIsLongerThanMaxDiscard() {
        final Peer peer = open(false);

        peer.send(request(0, WRITE, 1, 0, 0xFFFFFFFFL));

        assertThat(peer.available()).isZero();
        assertThat(peer.channel.isOpen()).isFalse();
    }

    @Test
    void shouldCloseOnBadRequestMagic() {
        final Peer peer = open(false);
        final byte[] bad = request(0, READ, 1, 0, 512);
        bad[0] = 0x67; // a reply magic, not a request

        peer.send(bad, request(0, READ, 2, 0, 512));

        assertThat(peer.available()).isZero();
        assertThat(peer.channel.isOpen()).isFalse();
    }

    // ---------------------------------------------------------------- FLUSH, FUA, CACHE

    @Test
    void shouldRejectFlushWithOffsetOrLength() {
        final Peer peer = open(false);

        peer.send(request(0, FLUSH, 1, 4096, 0), request(0, FLUSH, 2, 0, 4096));

        assertSimple(peer.simpleReply(0), 1, EINVAL);
        assertSimple(peer.simpleReply(0), 2, EINVAL);
        assertThat(disk.stats().errors(NbdError.EINVAL)).isEqualTo(2);
    }

    @Test
    void shouldFlush() {
        final Peer peer = open(false);
        final long syncs = volume.flusher().syncCount();

        peer.send(request(0, FLUSH, 1, 0, 0), request(CMD_FLAG_FUA, FLUSH, 2, 0, 0));

        assertSimple(peer.simpleReply(0), 1, 0);
        assertSimple(peer.simpleReply(0), 2, 0);
        assertThat(volume.flusher().syncCount()).isEqualTo(syncs + 2);
    }

    @Test
    void shouldSyncFuaWrite() {
        final Peer peer = open(false);
        final long syncs = volume.flusher().syncCount();
        final byte[] data = pattern(512, 5);

        peer.send(request(CMD_FLAG_FUA, WRITE, 1, 4096, 512, data));

        assertSimple(peer.simpleReply(0), 1, 0);
        assertThat(volume.flusher().syncCount()).isEqualTo(syncs + 1);
        assertThat(readSimple(peer, 2, 4096, 512)).isEqualTo(data);
    }

    @Test
    void shouldAnswerCache() {
        final Peer peer = open(false);

        peer.send(request(0, CACHE, 1, 0, 1 << 20));

        assertSimple(peer.simpleReply(0), 1, 0);
    }

    // ---------------------------------------------------------------- BLOCK_STATUS

    @Test
    void shouldRejectBlockStatusWithoutMetaContext() {
        final Peer peer = open(true);

        peer.send(request(0, BLOCK_STATUS, 1, 0, 4096));

        assertErrorChunk(peer.chunk(), 1, EINVAL);
        assertThat(peer.available()).isZero();
        assertThat(disk.stats().errors(NbdError.EINVAL)).isEqualTo(1);
    }

    @Test
    void shouldRejectBlockStatusWithoutStructuredReplies() {
        final Peer peer = open(false);

        peer.send(request(0, BLOCK_STATUS, 1, 0, 4096));

        assertSimple(peer.simpleReply(0), 1, EINVAL);
    }

    @Test
    void shouldRejectBlockStatusWhenContextWasSetForAnotherExport() {
        final Peer peer = open(context, "ro", true, "disk");

        peer.send(request(0, BLOCK_STATUS, 1, 0, 4096));

        assertErrorChunk(peer.chunk(), 1, EINVAL);
    }

    @Test
    void shouldRejectZeroLengthBlockStatus() {
        final Peer peer = openWithBaseAllocation();

        peer.send(request(0, BLOCK_STATUS, 1, 0, 0));

        assertErrorChunk(peer.chunk(), 1, EINVAL);
    }

    @Test
    void shouldReportDataThenHoleExtents() {
        final Peer peer = openWithBaseAllocation();
        write(peer, 1, 0, pattern(65536, 6));

        peer.send(request(0, BLOCK_STATUS, 2, 0, 131072));

        final Chunk chunk = peer.chunk();
        assertThat(chunk.cookie()).isEqualTo(2);
        assertThat(extents(chunk)).containsExactly(new long[] {65536, 0},
            new long[] {65536, STATE_HOLE | STATE_ZERO});
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldReportWholeExportAsOneHoleWhenNothingWasWritten() {
        final Peer peer = openWithBaseAllocation();

        peer.send(request(0, BLOCK_STATUS, 2, 0, DISK_SIZE));

        assertThat(extents(peer.chunk())).containsExactly(new long[] {DISK_SIZE, STATE_HOLE | STATE_ZERO});
    }

    @Test
    void shouldReportExactlyOneExtentWithReqOne() {
        final Peer peer = openWithBaseAllocation();
        write(peer, 1, 65536, pattern(4096, 7));

        peer.send(request(CMD_FLAG_REQ_ONE, BLOCK_STATUS, 2, 0, 131072),
            request(CMD_FLAG_REQ_ONE, BLOCK_STATUS, 3, 65536, 131072),
            request(CMD_FLAG_REQ_ONE, BLOCK_STATUS, 4, 1 << 20, 4096));

        final List<long[]> first = extents(peer.chunk());
        assertThat(first).hasSize(1);
        assertThat(first.getFirst()).containsExactly(65536, STATE_HOLE | STATE_ZERO);
        final List<long[]> second = extents(peer.chunk());
        assertThat(second).hasSize(1);
        assertThat(second.getFirst()).containsExactly(4096, 0);
        final List<long[]> third = extents(peer.chunk());
        assertThat(third).hasSize(1);
        // the hole goes on to the end of the disc, but the extent must not be longer than the request
        assertThat(third.getFirst()).containsExactly(4096, STATE_HOLE | STATE_ZERO);
    }

    @Test
    void shouldNeverReportExtentsBeyondTheRequest() {
        final Peer peer = openWithBaseAllocation();
        write(peer, 1, 0, pattern(8192, 8));

        for (int length = 1; length <= 3 * 4096; length += 1021) {
            peer.send(request(0, BLOCK_STATUS, length, 4000, length));
            final Chunk chunk = peer.chunk();
            assertThat(chunk.cookie()).isEqualTo(length);
            final long sum = extents(chunk).stream().mapToLong(e -> e[0]).sum();
            assertThat(sum).as("length %d", length).isEqualTo(length);
        }
    }

    // ---------------------------------------------------------------- read-only, TRIM, WRITE_ZEROES

    @Test
    void shouldRefuseChangesToReadOnlyExport() {
        final Peer peer = open(context, "ro", false, null);

        peer.send(request(0, WRITE, 1, 0, 4, new byte[] {1, 2, 3, 4}),
            request(0, TRIM, 2, 0, 4096),
            request(0, WRITE_ZEROES, 3, 0, 4096),
            request(CMD_FLAG_FUA, WRITE, 4, 0, 4, new byte[] {1, 2, 3, 4}),
            request(0, FLUSH, 5, 0, 0));

        assertSimple(peer.simpleReply(0), 1, EPERM);
        assertSimple(peer.simpleReply(0), 2, EPERM);
        assertSimple(peer.simpleReply(0), 3, EPERM);
        assertSimple(peer.simpleReply(0), 4, EPERM);
        assertSimple(peer.simpleReply(0), 5, 0);
        assertThat(readSimple(peer, 6, 0, 4)).isEqualTo(new byte[4]);
        assertThat(registry.find("ro", null).stats().errors(NbdError.EPERM)).isEqualTo(4);
        assertThat(disk.stats().errors(NbdError.EPERM)).isZero();
    }

    @Test
    void shouldReadZerosAfterTrim() {
        final Peer peer = openWithBaseAllocation();
        write(peer, 1, 0, pattern(65536, 10));

        peer.send(request(0, TRIM, 2, 0, 65536));
        assertSimple(peer.simpleReply(0), 2, 0);

        peer.send(request(CMD_FLAG_DF, READ, 3, 0, 65536));
        final Chunk read = peer.chunk();
        assertThat(read.type()).isEqualTo(REPLY_TYPE_OFFSET_DATA);
        assertThat(Arrays.copyOfRange(read.payload(), 8, read.payload().length)).isEqualTo(new byte[65536]);
        peer.send(request(0, BLOCK_STATUS, 4, 0, 65536));
        assertThat(extents(peer.chunk())).containsExactly(new long[] {65536, STATE_HOLE | STATE_ZERO});
    }

    @Test
    void shouldReadZerosAfterWriteZeroes() {
        final Peer peer = open(false);
        write(peer, 1, 0, pattern(3 * 65536, 11));

        peer.send(request(0, WRITE_ZEROES, 2, 0, 65536),
            request(CMD_FLAG_NO_HOLE, WRITE_ZEROES, 3, 65536, 65536),
            request(CMD_FLAG_FUA | CMD_FLAG_FAST_ZERO, WRITE_ZEROES, 4, 2 * 65536, 4096));

        assertSimple(peer.simpleReply(0), 2, 0);
        assertSimple(peer.simpleReply(0), 3, 0);
        assertSimple(peer.simpleReply(0), 4, 0);
        final byte[] expected = new byte[3 * 65536];
        System.arraycopy(pattern(3 * 65536, 11), 2 * 65536 + 4096, expected, 2 * 65536 + 4096, 65536 - 4096);
        assertThat(readSimple(peer, 5, 0, 3 * 65536)).isEqualTo(expected);
    }

    @Test
    void shouldPunchHoleForWriteZeroesWithoutNoHole() {
        final Peer peer = openWithBaseAllocation();
        write(peer, 1, 0, pattern(65536, 12));

        peer.send(request(0, WRITE_ZEROES, 2, 0, 65536));
        assertSimple(peer.simpleReply(0), 2, 0);

        peer.send(request(0, BLOCK_STATUS, 3, 0, 65536));
        assertThat(extents(peer.chunk())).containsExactly(new long[] {65536, STATE_HOLE | STATE_ZERO});
    }

    @Test
    void shouldLimitReadToMaxReadChunksAndSendTheRestAsData() {
        final NbdServerConfig config = new NbdServerConfig();
        config.maxReadChunks = 4;
        final Peer peer = open(new NbdServerContext(config.conclude(), registry, Runnable::run), "disk", true, null);
        // data at every other 4 KiB block: 0, 8K, 16K, ...
        final byte[] expected = new byte[10 * 4096];
        for (int i = 0; i < 10; i += 2) {
            final byte[] block = pattern(4096, i);
            write(peer, 100 + i, (long) i * 4096, block);
            System.arraycopy(block, 0, expected, i * 4096, 4096);
        }

        peer.send(request(0, READ, 1, 0, expected.length));

        final byte[] assembled = new byte[expected.length];
        long next = 0;
        int chunks = 0;
        Chunk chunk;
        do {
            chunk = peer.chunk();
            chunks++;
            assertThat(chunk.cookie()).isEqualTo(1);
            final ByteBuffer body = chunk.body();
            final long offset = body.getLong();
            assertThat(offset).isEqualTo(next);
            if (chunk.type() == REPLY_TYPE_OFFSET_HOLE) {
                next += body.getInt();
            } else {
                assertThat(chunk.type()).isEqualTo(REPLY_TYPE_OFFSET_DATA);
                body.get(assembled, (int) offset, body.remaining());
                next = offset + chunk.payload().length - 8;
            }
        } while (!chunk.done());
        assertThat(chunks).isLessThanOrEqualTo(4);
        assertThat(next).isEqualTo(expected.length);
        assertThat(assembled).isEqualTo(expected);
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldLimitBlockStatusToMaxBlockStatusExtents() {
        final NbdServerConfig config = new NbdServerConfig();
        config.maxBlockStatusExtents = 2;
        final Peer peer = open(new NbdServerContext(config.conclude(), registry, Runnable::run), "disk", true,
            "disk");
        for (int i = 0; i < 10; i += 2) {
            write(peer, 100 + i, (long) i * 4096, pattern(4096, i));
        }

        peer.send(request(0, BLOCK_STATUS, 1, 0, 10 * 4096));

        assertThat(extents(peer.chunk())).containsExactly(new long[] {4096, 0},
            new long[] {4096, STATE_HOLE | STATE_ZERO});
    }

    @Test
    void shouldAnswerEioForChangesToFailedVolumeButKeepReading() {
        final Peer peer = open(true);
        write(peer, 1, 0, pattern(512, 15));
        volume.markFailed(new io.nbdtail.storage.StorageException(io.nbdtail.storage.StorageException.Kind.IO_ERROR,
            "test: fdatasync failed"));

        peer.send(request(0, WRITE, 2, 0, 4, new byte[4]), request(0, TRIM, 3, 0, 4096),
            request(0, WRITE_ZEROES, 4, 0, 4096), request(0, FLUSH, 5, 0, 0));

        final int eio = NbdError.EIO.code();
        assertSimple(peer.simpleReply(0), 2, eio);
        assertSimple(peer.simpleReply(0), 3, eio);
        assertSimple(peer.simpleReply(0), 4, eio);
        assertSimple(peer.simpleReply(0), 5, eio);
        assertThat(disk.stats().errors(NbdError.EIO)).isEqualTo(4);
        peer.send(request(CMD_FLAG_DF, READ, 6, 0, 512));
        final Chunk read = peer.chunk();
        assertThat(read.type()).isEqualTo(REPLY_TYPE_OFFSET_DATA);
        assertThat(Arrays.copyOfRange(read.payload(), 8, read.payload().length)).isEqualTo(pattern(512, 15));
        assertThat(peer.channel.isOpen()).isTrue();
    }

    @Test
    void shouldAnswerFailedReadWithErrorChunkOrSimpleError() {
        final Peer structured = open(true);
        final Peer simple = open(false);
        // Reads through the FileChannel now fail with ClosedChannelException.
        volume.device().close();

        structured.send(request(CMD_FLAG_DF, READ, 1, 0, 4096));
        simple.send(request(0, READ, 2, 0, 4096), request(0, READ, 3, 0, 0));

        assertErrorChunk(structured.chunk(), 1, NbdError.EIO.code());
        assertSimple(simple.simpleReply(4096), 2, NbdError.EIO.code());
        assertSimple(simple.simpleReply(0), 3, 0);
        assertThat(structured.available()).isZero();
        assertThat(simple.available()).isZero();
        assertThat(structured.channel.isOpen()).isTrue();
    }

    @Test
    void shouldAnswerOutstandingRequestsThenCloseWhenDrained() {
        final ManualExecutor storage = new ManualExecutor();
        final Peer peer = open(new NbdServerContext(context.config(), registry, storage), "disk", false, null);
        peer.send(request(0, READ, 1, 0, 512), request(0, WRITE, 2, 0, 4, new byte[] {1, 2, 3, 4}));
        final NbdTransmissionHandler handler = peer.channel.pipeline().get(NbdTransmissionHandler.class);

        handler.beginDrain();
        assertThat(peer.channel.isOpen()).isTrue();
        assertThat(peer.channel.config().isAutoRead()).isFalse();
        storage.runAll(peer.channel);

        assertThat(peer.simpleReply(512).cookie()).isEqualTo(1);
        assertSimple(peer.simpleReply(0), 2, 0);
        assertThat(peer.channel.isOpen()).isFalse();
    }

    // ---------------------------------------------------------------- pipelining, back-pressure, DISC

    /** A storage executor that runs nothing until told to: lets a test see requests in flight. */
    private static final class ManualExecutor implements Executor {
        final ArrayDeque<Runnable> tasks = new ArrayDeque<>();
        int maxQueued;

        @Override
        public void execute(final Runnable task) {
            tasks.add(task);
            maxQueued = Math.max(maxQueued, tasks.size());
        }

        /** Runs storage tasks and event-loop tasks until both are idle. */
        void runAll(final EmbeddedChannel channel) {
            do {
                Runnable task;
                while ((task = tasks.poll()) != null) {
                    task.run();
                }
                channel.runPendingTasks();
            } while (!tasks.isEmpty());
        }
    }

    @Test
    void shouldAnswerTwoHundredPipelinedReadsWithMatchingCookies() {
        final NbdServerConfig config = new NbdServerConfig();
        config.maxInFlightRequests = 64;
        final ManualExecutor storage = new ManualExecutor();
        final Peer peer = open(new NbdServerContext(config.conclude(), registry, storage), "disk", false, null);
        final int n = 200;
        final byte[] data = pattern(n * 512, 13);
        peer.send(request(0, WRITE, 1000, 0, data.length, data));
        storage.runAll(peer.channel);
        assertSimple(peer.simpleReply(0), 1000, 0);
        storage.maxQueued = 0;

        final byte[][] reads = new byte[n][];
        for (int i = 0; i < n; i++) {
            reads[i] = request(0, READ, i, (long) i * 512, 512);
        }
        peer.send(reads);

        final NbdTransmissionHandler handler = peer.channel.pipeline().get(NbdTransmissionHandler.class);
        assertThat(handler.inFlight()).isEqualTo(n);
        assertThat(storage.tasks).hasSize(64);
        assertThat(peer.channel.config().isAutoRead()).isFalse();
        assertThat(peer.available()).isZero();

        storage.runAll(peer.channel);

        final Set<Long> cookies = new HashSet<>();
        for (int i = 0; i < n; i++) {
            final SimpleReply reply = peer.simpleReply(512);
            assertThat(reply.error()).isZero();
            final int at = (int) reply.cookie() * 512;
            assertThat(reply.data()).as("cookie %d", reply.cookie()).isEqualTo(Arrays.copyOfRange(data, at, at + 512));
            cookies.add(reply.cookie());
        }
        assertThat(cookies).hasSize(n).allMatch(c -> c >= 0 && c < n);
        assertThat(peer.available()).isZero();
        assertThat(storage.maxQueued).isLessThanOrEqualTo(64);
        assertThat(handler.inFlight()).isZero();
        assertThat(peer.channel.config().isAutoRead()).isTrue();
    }

    @Test
    void shouldHoldASecondConnectionBackWhileTheVolumeIsAtItsCapAndWakeItWhenRoomIsFreed() {
        final NbdServerConfig config = new NbdServerConfig();
        config.maxInFlightRequests = 64;
        config.maxInFlightRequestsPerVolume = 64;
        final ManualExecutor storage = new ManualExecutor();
        final NbdServerContext ctx = new NbdServerContext(config.conclude(), registry, storage);
        final Peer a = open(ctx, "disk", false, null);
        final Peer b = open(ctx, "disk", false, null);
        final byte[][] reads = new byte[64][];
        for (int i = 0; i < 64; i++) {
            reads[i] = request(0, READ, i, (long) i * 512, 512);
        }
        a.send(reads);
        assertThat(disk.inFlightRequests()).isEqualTo(64);

        // B may always have one request, but not a second while the volume is full.
        b.send(request(0, READ, 100, 0, 512), request(0, READ, 101, 512, 512));
        final NbdTransmissionHandler hb = b.channel.pipeline().get(NbdTransmissionHandler.class);
        assertThat(disk.inFlightRequests()).isEqualTo(65);
        assertThat(hb.inFlight()).isEqualTo(2);
        assertThat(storage.tasks).hasSize(65);
        assertThat(b.channel.config().isAutoRead()).isFalse();

        // A's requests finish: room again, and B's waiting request is dispatched on B's event loop.
        for (int i = 0; i < 64; i++) {
            storage.tasks.poll().run();
        }
        a.channel.runPendingTasks();
        b.channel.runPendingTasks();
        assertThat(storage.tasks).hasSize(2);
        storage.runAll(b.channel);
        assertSimple(b.simpleReply(512), 100, 0);
        assertSimple(b.simpleReply(512), 101, 0);
        assertThat(disk.inFlightRequests()).isZero();
        assertThat(b.channel.config().isAutoRead()).isTrue();
        for (int i = 0; i < 64; i++) {
            assertThat(a.simpleReply(512).error()).isZero();
        }
    }

    @Test
    void shouldCloseAConnectionWhoseRequestTricklesInButNotAnIdleOne() {
        final NbdServerConfig config = new NbdServerConfig();
        config.requestTimeoutMillis = 2_000;
        final NbdServerContext ctx = new NbdServerContext(config.conclude(), registry, Runnable::run);
        final Peer slow = open(ctx, "disk", false, null);
        final Peer idle = open(ctx, "disk", false, null);
        slow.send(Arrays.copyOf(request(0, WRITE, 1, 0, 4096), 28 + 100)); // header and 100 of 4096 bytes
        for (int second = 0; second < 4; second++) {
            slow.channel.advanceTimeBy(1, TimeUnit.SECONDS);
            slow.channel.runScheduledPendingTasks();
            idle.channel.advanceTimeBy(1, TimeUnit.SECONDS);
            idle.channel.runScheduledPendingTasks();
            if (second == 0) {
                slow.send(new byte[10]); // progress on the payload does not reset the deadline
            }
        }
        assertThat(slow.channel.isOpen()).isFalse();
        assertThat(idle.channel.isOpen()).isTrue();
        idle.send(request(0, READ, 7, 0, 512));
        assertSimple(idle.simpleReply(512), 7, 0);
    }

    @Test
    void shouldAnswerTwoHundredPipelinedReadsWithInlineStorage() {
        final NbdServerConfig config = new NbdServerConfig();
        config.maxInFlightRequests = 64;
        final Peer peer = open(new NbdServerContext(config.conclude(), registry, Runnable::run), "disk", true, null);
        final int n = 200;
        final byte[][] reads = new byte[n][];
        for (int i = 0; i < n; i++) {
            reads[i] = request(CMD_FLAG_DF, READ, 1_000_000L + i, (long) i * 4096, 4096);
        }

        peer.send(reads);

        final Set<Long> cookies = new HashSet<>();
        for (int i = 0; i < n; i++) {
            final Chunk chunk = peer.chunk();
            assertThat(chunk.type()).isEqualTo(REPLY_TYPE_OFFSET_DATA);
            assertThat(chunk.done()).isTrue();
            assertThat(chunk.body().getLong()).isEqualTo((chunk.cookie() - 1_000_000L) * 4096);
            cookies.add(chunk.cookie());
        }
        assertThat(cookies).hasSize(n);
        assertThat(peer.available()).isZero();
        assertThat(disk.stats().requests(NbdCommand.READ)).isEqualTo(n);
    }

    @Test
    void shouldAnswerOutstandingRequestsThenCloseOnDisc() {
        final ManualExecutor storage = new ManualExecutor();
        final Peer peer = open(new NbdServerContext(context.config(), registry, storage), "disk", false, null);

        peer.send(request(0, READ, 1, 0, 512), request(0, READ, 2, 512, 512), request(0, FLUSH, 3, 0, 0),
            request(0, DISC, 4, 0, 0), request(0, READ, 5, 0, 512));

        // DISC seen, but three requests are still being served
        assertThat(storage.tasks).hasSize(3);
        assertThat(peer.channel.isOpen()).isTrue();
        assertThat(peer.channel.config().isAutoRead()).isFalse();

        storage.runAll(peer.channel);

        final Set<Long> cookies = new HashSet<>();
        cookies.add(peer.simpleReply(512).cookie());
        cookies.add(peer.simpleReply(512).cookie());
        final SimpleReply flush = peer.simpleReply(0);
        assertSimple(flush, 3, 0);
        assertThat(cookies).containsExactlyInAnyOrder(1L, 2L);
        // nothing for DISC, nothing for the READ after it
        assertThat(peer.available()).isZero();
        assertThat(peer.channel.isOpen()).isFalse();
        assertThat(disk.stats().requests(NbdCommand.DISC)).isEqualTo(1);
        assertThat(disk.stats().connectionsOpen()).isZero();
    }

    @Test
    void shouldCloseAtOnceOnDiscWithNothingOutstanding() {
        final Peer peer = open(false);

        peer.send(request(0, DISC, 1, 0, 0));

        assertThat(peer.available()).isZero();
        assertThat(peer.channel.isOpen()).isFalse();
    }

    @Test
    void shouldReleaseEverythingWhenClosedWithRequestsInFlight() {
        final ManualExecutor storage = new ManualExecutor();
        final Peer peer = open(new NbdServerContext(context.config(), registry, storage), "disk", false, null);
        final byte[] data = pattern(4096, 14);
        final byte[][] requests = new byte[200][];
        for (int i = 0; i < requests.length; i++) {
            requests[i] = i % 2 == 0 ? request(0, WRITE, i, 0, 4096, data) : request(0, READ, i, 0, 4096);
        }
        peer.send(requests);

        peer.channel.close();
        storage.runAll(peer.channel);

        assertThat(peer.channel.isOpen()).isFalse();
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldCloseWhenDrainedWithNothingOutstanding() {
        final Peer peer = open(false);
        final NbdTransmissionHandler handler = peer.channel.pipeline().get(NbdTransmissionHandler.class);

        handler.beginDrain();
        peer.channel.runPendingTasks();

        assertThat(peer.channel.isOpen()).isFalse();
    }

    @Test
    void shouldCountRequestsAndErrorsInExportStats() {
        final Peer peer = open(false);
        assertThat(disk.stats().connectionsOpen()).isEqualTo(1);
        assertThat(disk.stats().connectionsOpened()).isEqualTo(1);

        peer.send(request(0, 99, 1, 0, 0), request(CMD_FLAG_REQ_ONE, READ, 2, 0, 1),
            request(0, READ, 3, DISK_SIZE, 1), request(0, WRITE, 4, DISK_SIZE, 1, new byte[1]),
            request(0, READ, 5, 0, 1));
        for (int i = 0; i < 4; i++) {
            assertThat(peer.simpleReply(1).error()).isNotZero();
        }
        assertSimple(peer.simpleReply(1), 5, 0);

        final ExportStats stats = disk.stats();
        assertThat(stats.errors(NbdError.EINVAL)).isEqualTo(3);
        assertThat(stats.errors(NbdError.ENOSPC)).isEqualTo(1);
        assertThat(stats.errors(NbdError.EIO)).isZero();
        assertThat(stats.requests(NbdCommand.READ)).isEqualTo(3);
        assertThat(stats.requests(NbdCommand.WRITE)).isEqualTo(1);
        assertThat(stats.requests(NbdCommand.UNKNOWN)).isEqualTo(1);
        assertThat(stats.bytesRead()).isEqualTo(1);
        assertThat(stats.bytesWritten()).isZero();

        peer.channel.close();
        assertThat(stats.connectionsOpen()).isZero();
        assertThat(stats.connectionsOpened()).isEqualTo(1);
    }
}
