package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.codec.NbdRequestDecoder;
import io.nbdtail.nbd.engine.NbdTestSupport.Chunk;
import io.nbdtail.nbd.engine.NbdTestSupport.OptionReply;
import io.nbdtail.nbd.engine.NbdTestSupport.Peer;
import io.nbdtail.nbd.engine.NbdTestSupport.SimpleReply;
import io.nbdtail.volume.Volume;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static io.nbdtail.nbd.engine.NbdTestSupport.DISK_SIZE;
import static io.nbdtail.nbd.engine.NbdTestSupport.clientFlags;
import static io.nbdtail.nbd.engine.NbdTestSupport.concat;
import static io.nbdtail.nbd.engine.NbdTestSupport.infoData;
import static io.nbdtail.nbd.engine.NbdTestSupport.metaContextData;
import static io.nbdtail.nbd.engine.NbdTestSupport.option;
import static io.nbdtail.nbd.engine.NbdTestSupport.request;
import static io.nbdtail.nbd.engine.NbdTestSupport.utf8;
import static io.nbdtail.nbd.protocol.NbdConstants.*;
import static org.assertj.core.api.Assertions.assertThat;

class NbdHandshakeHandlerTest {
    /** Fixed newstyle and no zeroes: what qemu and nbd-client send. */
    private static final int FLAGS = CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES;
    /** Transmission flags of the writable test export without structured replies. */
    private static final int EXPORT_FLAGS = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA
        | TFLAG_CAN_MULTI_CONN | TFLAG_SEND_CACHE | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES | TFLAG_SEND_FAST_ZERO;
    private static final int BLOCK_SIZE_MAX = 32 << 20;

    @TempDir
    Path dir;

    private Volume volume;
    private SimpleExportRegistry registry;
    private NbdServerContext context;
    private final List<Peer> peers = new ArrayList<>();

    @BeforeEach
    void setUp() throws Exception {
        volume = NbdTestSupport.openVolume(dir, "disk", "test disk");
        registry = new SimpleExportRegistry();
        registry.add(Export.of(volume));
        context = new NbdServerContext(new NbdServerConfig().conclude(), registry, Runnable::run);
    }

    @AfterEach
    void tearDown() {
        for (final Peer p : peers) {
            p.close();
        }
        volume.close();
    }

    private Peer connect(final NbdServerContext ctx) {
        final Peer peer = new Peer(new EmbeddedChannel(new NbdHandshakeHandler(ctx)));
        peers.add(peer);
        return peer;
    }

    /** Connects, checks the greeting and sends the client flags. */
    private Peer haggling() {
        final Peer peer = connect(context);
        peer.greeting();
        peer.send(clientFlags(FLAGS));
        return peer;
    }

    private static void assertError(final OptionReply reply, final int option, final int type) {
        assertThat(reply.option()).isEqualTo(option);
        assertThat(reply.type()).as("reply type of %s", reply).isEqualTo(type);
    }

    private static void assertAck(final OptionReply reply, final int option) {
        assertThat(reply.option()).isEqualTo(option);
        assertThat(reply.type()).as("reply type of %s", reply).isEqualTo(REP_ACK);
        assertThat(reply.data()).isEmpty();
    }

    private static void assertInHandshake(final Peer peer) {
        assertThat(peer.channel.isOpen()).isTrue();
        assertThat(peer.channel.pipeline().get(NbdHandshakeHandler.class)).isNotNull();
        assertThat(peer.channel.pipeline().get("nbd-transmission")).isNull();
    }

    private static void assertInTransmission(final Peer peer) {
        assertThat(peer.channel.isOpen()).isTrue();
        assertThat(peer.channel.pipeline().get(NbdHandshakeHandler.class)).isNull();
        assertThat(peer.channel.pipeline().get("nbd-request-decoder")).isInstanceOf(NbdRequestDecoder.class);
        assertThat(peer.channel.pipeline().get("nbd-transmission")).isInstanceOf(NbdTransmissionHandler.class);
        assertThat(peer.channel.pipeline().names()).containsSubsequence("nbd-request-decoder", "nbd-transmission");
    }

    // ---------------------------------------------------------------- greeting and client flags

    @Test
    void shouldSendGreetingOnChannelActive() {
        final Peer peer = connect(context);

        // "NBDMAGIC" "IHAVEOPT" flags FIXED_NEWSTYLE|NO_ZEROES
        assertThat(peer.take(18)).isEqualTo(concat(utf8("NBDMAGIC"), utf8("IHAVEOPT"), new byte[] {0, 3}));
        assertThat(peer.available()).isZero();
        assertInHandshake(peer);
    }

    @Test
    void shouldCloseWhenClientFlagsHaveUnknownBit() {
        final Peer peer = connect(context);
        peer.greeting();

        peer.send(clientFlags(FLAGS | 4), option(OPT_LIST));

        assertThat(peer.channel.isOpen()).isFalse();
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldAcceptClientFlagsSplitAcrossReads() {
        final Peer peer = connect(context);
        peer.greeting();
        final byte[] stream = concat(clientFlags(FLAGS), option(OPT_LIST));
        for (final byte b : stream) {
            peer.send(new byte[] {b});
        }

        assertThat(peer.optionReplies()).extracting(OptionReply::type).containsExactly(REP_SERVER, REP_ACK);
    }

    @Test
    void shouldCloseOnBadOptionMagic() {
        final Peer peer = haggling();
        final byte[] bad = option(OPT_LIST);
        bad[0] = 'X';

        peer.send(bad, option(OPT_LIST));

        assertThat(peer.channel.isOpen()).isFalse();
        assertThat(peer.available()).isZero();
    }

    // ---------------------------------------------------------------- simple options

    @Test
    void shouldAnswerUnknownOptionWithErrUnsupAndContinue() {
        final Peer peer = haggling();

        peer.send(option(0x1234, new byte[] {1, 2, 3}));
        assertError(peer.optionReply(), 0x1234, REP_ERR_UNSUP);

        peer.send(option(OPT_LIST));
        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).extracting(OptionReply::type).containsExactly(REP_SERVER, REP_ACK);
        assertInHandshake(peer);
    }

    @Test
    void shouldAnswerExtendedHeadersAndPeekExportWithErrUnsup() {
        final Peer peer = haggling();

        peer.send(option(OPT_EXTENDED_HEADERS), option(OPT_PEEK_EXPORT), option(0xFFFFFFFF));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(3);
        assertError(replies.get(0), OPT_EXTENDED_HEADERS, REP_ERR_UNSUP);
        assertError(replies.get(1), OPT_PEEK_EXPORT, REP_ERR_UNSUP);
        assertError(replies.get(2), 0xFFFFFFFF, REP_ERR_UNSUP);
        assertThat(replies.get(2).text()).contains("4294967295");
    }

    @Test
    void shouldListExportsWithNameAndDescription() throws Exception {
        final Volume other = NbdTestSupport.openVolume(dir, "alpha", "");
        try {
            registry.add(Export.of(other));
            final Peer peer = haggling();

            peer.send(option(OPT_LIST));

            final List<OptionReply> replies = peer.optionReplies();
            assertThat(replies).hasSize(3);
            // sorted by name: alpha (no description), then disk
            assertThat(replies.get(0).type()).isEqualTo(REP_SERVER);
            assertThat(replies.get(0).data()).isEqualTo(concat(new byte[] {0, 0, 0, 5}, utf8("alpha")));
            assertThat(replies.get(1).option()).isEqualTo(OPT_LIST);
            assertThat(replies.get(1).type()).isEqualTo(REP_SERVER);
            assertThat(replies.get(1).data()).isEqualTo(concat(new byte[] {0, 0, 0, 4}, utf8("disk"),
                utf8("test disk")));
            assertAck(replies.get(2), OPT_LIST);
        } finally {
            other.close();
        }
    }

    @Test
    void shouldRejectListWithData() {
        final Peer peer = haggling();

        peer.send(option(OPT_LIST, new byte[] {0}));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(1);
        assertError(replies.getFirst(), OPT_LIST, REP_ERR_INVALID);
        assertInHandshake(peer);
    }

    @Test
    void shouldAckAbortThenClose() {
        final Peer peer = haggling();

        peer.send(option(OPT_ABORT), option(OPT_LIST));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(1);
        assertAck(replies.getFirst(), OPT_ABORT);
        assertThat(peer.channel.isOpen()).isFalse();
    }

    @Test
    void shouldRefuseStartTlsByPolicy() {
        final Peer peer = haggling();

        peer.send(option(OPT_STARTTLS));
        assertError(peer.optionReply(), OPT_STARTTLS, REP_ERR_POLICY);
        peer.send(option(OPT_STARTTLS, new byte[] {1}));
        assertError(peer.optionReply(), OPT_STARTTLS, REP_ERR_INVALID);
        assertInHandshake(peer);
    }

    @Test
    void shouldAckStructuredReplyOnce() {
        final Peer peer = haggling();

        peer.send(option(OPT_STRUCTURED_REPLY, new byte[] {0}));
        assertError(peer.optionReply(), OPT_STRUCTURED_REPLY, REP_ERR_INVALID);
        peer.send(option(OPT_STRUCTURED_REPLY));
        assertAck(peer.optionReply(), OPT_STRUCTURED_REPLY);
        peer.send(option(OPT_STRUCTURED_REPLY));
        assertError(peer.optionReply(), OPT_STRUCTURED_REPLY, REP_ERR_INVALID);
        assertThat(peer.available()).isZero();
        assertInHandshake(peer);
    }

    // ---------------------------------------------------------------- INFO

    @Test
    void shouldAnswerInfoForUnknownExportWithErrUnknown() {
        final Peer peer = haggling();

        peer.send(option(OPT_INFO, infoData("nope")));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(1);
        assertError(replies.getFirst(), OPT_INFO, REP_ERR_UNKNOWN);
        assertInHandshake(peer);
    }

    @Test
    void shouldAnswerInfoWithEveryRequestedItem() {
        final Peer peer = haggling();

        peer.send(option(OPT_INFO, infoData("disk", INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE)));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(5);
        assertThat(replies).extracting(OptionReply::option).containsOnly(OPT_INFO);
        assertThat(replies).extracting(OptionReply::type)
            .containsExactly(REP_INFO, REP_INFO, REP_INFO, REP_INFO, REP_ACK);
        // INFO_EXPORT: type 0, size, flags; no SEND_DF without structured replies
        final ByteBuffer export = replies.get(0).body();
        assertThat(replies.get(0).data()).hasSize(12);
        assertThat(export.getShort()).isEqualTo((short) INFO_EXPORT);
        assertThat(export.getLong()).isEqualTo(DISK_SIZE);
        final int flags = export.getShort() & 0xffff;
        assertThat(flags).isEqualTo(EXPORT_FLAGS);
        assertThat(flags & TFLAG_CAN_MULTI_CONN).isNotZero();
        assertThat(flags & TFLAG_SEND_DF).isZero();
        assertThat(flags & TFLAG_READ_ONLY).isZero();
        // INFO_NAME, INFO_DESCRIPTION
        assertThat(replies.get(1).data()).isEqualTo(concat(new byte[] {0, 1}, utf8("disk")));
        assertThat(replies.get(2).data()).isEqualTo(concat(new byte[] {0, 2}, utf8("test disk")));
        // INFO_BLOCK_SIZE: 1, 4096, 32 MiB
        final ByteBuffer bs = replies.get(3).body();
        assertThat(replies.get(3).data()).hasSize(14);
        assertThat(bs.getShort()).isEqualTo((short) INFO_BLOCK_SIZE);
        assertThat(bs.getInt()).isEqualTo(1);
        assertThat(bs.getInt()).isEqualTo(4096);
        assertThat(bs.getInt()).isEqualTo(BLOCK_SIZE_MAX);
        assertInHandshake(peer);
    }

    @Test
    void shouldAnnounceSendDfOnlyAfterStructuredReplies() {
        final Peer peer = haggling();

        peer.send(option(OPT_STRUCTURED_REPLY), option(OPT_INFO, infoData("disk")));

        final List<OptionReply> replies = peer.optionReplies();
        assertAck(replies.getFirst(), OPT_STRUCTURED_REPLY);
        final ByteBuffer export = replies.get(1).body();
        assertThat(export.getShort()).isEqualTo((short) INFO_EXPORT);
        export.getLong();
        assertThat(export.getShort() & 0xffff).isEqualTo(EXPORT_FLAGS | TFLAG_SEND_DF);
        // without requests: EXPORT and BLOCK_SIZE, then ACK
        assertThat(replies).extracting(OptionReply::type).containsExactly(REP_ACK, REP_INFO, REP_INFO, REP_ACK);
    }

    @Test
    void shouldAnnounceReadOnlyExport() throws Exception {
        registry.add(new Export("ro", "", volume, true));
        final Peer peer = haggling();

        peer.send(option(OPT_INFO, infoData("ro", INFO_DESCRIPTION)));

        final List<OptionReply> replies = peer.optionReplies();
        // the empty description is not sent
        assertThat(replies).extracting(OptionReply::type).containsExactly(REP_INFO, REP_INFO, REP_ACK);
        final ByteBuffer export = replies.getFirst().body();
        export.getShort();
        export.getLong();
        assertThat(export.getShort() & 0xffff).isEqualTo(TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_SEND_FLUSH
            | TFLAG_SEND_FUA | TFLAG_CAN_MULTI_CONN | TFLAG_SEND_CACHE);
    }

    @Test
    void shouldRejectInfoWithNameLongerThanOption() {
        final Peer peer = haggling();
        final byte[] data = infoData("disk", INFO_NAME);
        data[3] = 50; // name length 50, but the option holds only 4 bytes of name

        peer.send(option(OPT_INFO, data));
        assertError(peer.optionReply(), OPT_INFO, REP_ERR_INVALID);

        final byte[] huge = infoData("disk");
        huge[0] = (byte) 0xff; // name length 0xff000004
        peer.send(option(OPT_INFO, huge));
        assertError(peer.optionReply(), OPT_INFO, REP_ERR_INVALID);
        assertThat(peer.available()).isZero();
        assertInHandshake(peer);
    }

    @Test
    void shouldRejectInfoWithRequestCountMismatch() {
        final Peer peer = haggling();
        final byte[] tooMany = infoData("disk", INFO_NAME);
        tooMany[4 + 4 + 1] = 2; // says 2 requests, carries 1
        final byte[] trailing = concat(infoData("disk", INFO_NAME), new byte[] {0});

        peer.send(option(OPT_INFO, tooMany), option(OPT_INFO, trailing), option(OPT_INFO, new byte[] {0, 0, 0, 0, 0}));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(3);
        for (final OptionReply r : replies) {
            assertError(r, OPT_INFO, REP_ERR_INVALID);
        }
        assertInHandshake(peer);
    }

    @Test
    void shouldAnswerGoForUnknownExportWithErrUnknownAndStayInHandshake() {
        final Peer peer = haggling();

        peer.send(option(OPT_GO, infoData("nope")));

        assertError(peer.optionReply(), OPT_GO, REP_ERR_UNKNOWN);
        assertInHandshake(peer);
    }

    @Test
    void shouldAnswerEverythingButAbortWithErrShutdownWhileShuttingDown() {
        final Peer peer = haggling();
        context.beginShutdown();

        peer.send(option(OPT_INFO, infoData("disk")), option(OPT_GO, infoData("disk")), option(OPT_ABORT));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(3);
        assertError(replies.get(0), OPT_INFO, REP_ERR_SHUTDOWN);
        assertError(replies.get(1), OPT_GO, REP_ERR_SHUTDOWN);
        assertAck(replies.get(2), OPT_ABORT);
        assertThat(peer.channel.isOpen()).isFalse();
    }

    // ---------------------------------------------------------------- meta contexts

    @Test
    void shouldRejectSetMetaContextBeforeStructuredReplies() {
        final Peer peer = haggling();

        peer.send(option(OPT_SET_META_CONTEXT, metaContextData("disk", CONTEXT_BASE_ALLOCATION)));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(1);
        assertError(replies.getFirst(), OPT_SET_META_CONTEXT, REP_ERR_INVALID);
    }

    @Test
    void shouldSetBaseAllocationAfterStructuredReplies() {
        final Peer peer = haggling();

        peer.send(option(OPT_STRUCTURED_REPLY),
            option(OPT_SET_META_CONTEXT, metaContextData("disk", CONTEXT_BASE_ALLOCATION)));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(3);
        assertAck(replies.get(0), OPT_STRUCTURED_REPLY);
        assertThat(replies.get(1).option()).isEqualTo(OPT_SET_META_CONTEXT);
        assertThat(replies.get(1).type()).isEqualTo(REP_META_CONTEXT);
        assertThat(replies.get(1).data()).isEqualTo(concat(new byte[] {0, 0, 0, 1}, utf8("base:allocation")));
        assertAck(replies.get(2), OPT_SET_META_CONTEXT);
    }

    @Test
    void shouldListEveryContextForEmptyQueryList() {
        final Peer peer = haggling();

        peer.send(option(OPT_STRUCTURED_REPLY), option(OPT_LIST_META_CONTEXT, metaContextData("disk")));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(4);
        assertThat(new String(replies.get(2).data(), 4, replies.get(2).data().length - 4)).isEqualTo(
            "qemu:allocation-depth");
        assertThat(replies.get(1).type()).isEqualTo(REP_META_CONTEXT);
        assertThat(replies.get(1).option()).isEqualTo(OPT_LIST_META_CONTEXT);
        final ByteBuffer body = replies.get(1).body();
        body.getInt(); // context id: meaningless for LIST
        assertThat(new String(replies.get(1).data(), 4, replies.get(1).data().length - 4)).isEqualTo(
            CONTEXT_BASE_ALLOCATION);
        assertAck(replies.get(3), OPT_LIST_META_CONTEXT);
    }

    @Test
    void shouldListBaseAllocationForNamespaceQuery() {
        final Peer peer = haggling();

        peer.send(option(OPT_STRUCTURED_REPLY), option(OPT_LIST_META_CONTEXT, metaContextData("disk", "base:")));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).extracting(OptionReply::type).containsExactly(REP_ACK, REP_META_CONTEXT, REP_ACK);
        assertThat(replies.get(1).text()).endsWith(CONTEXT_BASE_ALLOCATION);
    }

    @Test
    void shouldIgnoreUnknownQuery() {
        final Peer peer = haggling();

        peer.send(option(OPT_STRUCTURED_REPLY),
            option(OPT_LIST_META_CONTEXT, metaContextData("disk", "qemu:dirty-bitmap:b0")),
            option(OPT_SET_META_CONTEXT, metaContextData("disk", "qemu:dirty-bitmap:b0", "base:")));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(3);
        assertAck(replies.get(1), OPT_LIST_META_CONTEXT);
        // "base:" is a LIST wildcard, not a context that SET can select
        assertAck(replies.get(2), OPT_SET_META_CONTEXT);
    }

    @Test
    void shouldRejectMalformedMetaContextOptions() {
        final Peer peer = haggling();
        final byte[] queryTooLong = metaContextData("disk", "base:allocation");
        queryTooLong[4 + 4 + 4 + 3] = 100; // query length 100 > what is left
        final byte[] countTooHigh = metaContextData("disk", "base:allocation");
        countTooHigh[4 + 4 + 3] = 2; // two queries announced, one present
        final byte[] trailing = concat(metaContextData("disk"), new byte[] {0});

        peer.send(option(OPT_STRUCTURED_REPLY),
            option(OPT_LIST_META_CONTEXT, new byte[] {0, 0, 0, 0}),
            option(OPT_LIST_META_CONTEXT, queryTooLong),
            option(OPT_LIST_META_CONTEXT, countTooHigh),
            option(OPT_SET_META_CONTEXT, trailing),
            option(OPT_SET_META_CONTEXT, metaContextData("nope", "base:allocation")));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(6);
        assertError(replies.get(1), OPT_LIST_META_CONTEXT, REP_ERR_INVALID);
        assertError(replies.get(2), OPT_LIST_META_CONTEXT, REP_ERR_INVALID);
        assertError(replies.get(3), OPT_LIST_META_CONTEXT, REP_ERR_INVALID);
        assertError(replies.get(4), OPT_SET_META_CONTEXT, REP_ERR_INVALID);
        assertError(replies.get(5), OPT_SET_META_CONTEXT, REP_ERR_UNKNOWN);
        assertInHandshake(peer);
    }

    @Test
    void shouldForgetSelectedContextWhenALaterSetFails() {
        // NBD spec, SET_META_CONTEXT: "replaces all previously-set metadata contexts (including when this
        // command fails)".
        final Peer peer = haggling();
        peer.send(option(OPT_STRUCTURED_REPLY),
            option(OPT_SET_META_CONTEXT, metaContextData("disk", CONTEXT_BASE_ALLOCATION)),
            option(OPT_SET_META_CONTEXT, metaContextData("nope", CONTEXT_BASE_ALLOCATION)),
            option(OPT_GO, infoData("disk")));
        final List<OptionReply> replies = new ArrayList<>();
        for (int i = 0; i < 7; i++) {
            replies.add(peer.optionReply());
        }
        assertThat(replies).extracting(OptionReply::type).containsExactly(REP_ACK, REP_META_CONTEXT, REP_ACK,
            REP_ERR_UNKNOWN, REP_INFO, REP_INFO, REP_ACK);
        assertInTransmission(peer);

        peer.send(request(0, 7, 1, 0, 4096));

        final Chunk chunk = peer.chunk();
        assertThat(chunk.type()).isEqualTo(REPLY_TYPE_ERROR);
        assertThat(chunk.body().getInt()).isEqualTo(22);
    }

    @Test
    void shouldForgetSelectedContextWhenALaterSetSelectsNothing() {
        final Peer peer = haggling();
        peer.send(option(OPT_STRUCTURED_REPLY),
            option(OPT_SET_META_CONTEXT, metaContextData("disk", CONTEXT_BASE_ALLOCATION)),
            option(OPT_SET_META_CONTEXT, metaContextData("disk")),
            option(OPT_GO, infoData("disk")));
        final List<OptionReply> replies = new ArrayList<>();
        for (int i = 0; i < 7; i++) {
            replies.add(peer.optionReply());
        }
        // zero queries select no context: a bare ACK
        assertThat(replies).extracting(OptionReply::type).containsExactly(REP_ACK, REP_META_CONTEXT, REP_ACK,
            REP_ACK, REP_INFO, REP_INFO, REP_ACK);

        peer.send(request(0, 7, 1, 0, 4096));

        assertThat(peer.chunk().type()).isEqualTo(REPLY_TYPE_ERROR);
    }

    // ---------------------------------------------------------------- limits

    @Test
    void shouldAnswerHugeOptionWithErrTooBigAndClose() {
        final Peer peer = haggling();
        // option LIST with length 0xFFFFFFFF and no data
        final byte[] header = ByteBuffer.allocate(16).putLong(IHAVEOPT).putInt(OPT_LIST).putInt(0xFFFFFFFF).array();

        final long start = System.nanoTime();
        peer.send(header, new byte[100]);

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(1);
        assertError(replies.getFirst(), OPT_LIST, REP_ERR_TOO_BIG);
        assertThat(peer.channel.isOpen()).isFalse();
        assertThat(System.nanoTime() - start).isLessThan(TimeUnit.SECONDS.toNanos(5));
    }

    @Test
    void shouldAcceptOptionOfExactlyMaxOptionLength() {
        final Peer peer = haggling();
        final int max = context.config().maxOptionLength;

        peer.send(option(OPT_LIST, new byte[max]));
        assertError(peer.optionReply(), OPT_LIST, REP_ERR_INVALID);
        assertInHandshake(peer);

        peer.send(option(OPT_LIST, new byte[max + 1]));
        assertError(peer.optionReply(), OPT_LIST, REP_ERR_TOO_BIG);
        assertThat(peer.channel.isOpen()).isFalse();
    }

    @Test
    void shouldLimitExportNamesToTheSpecMaximum() {
        final Peer peer = haggling();

        peer.send(option(OPT_INFO, infoData("n".repeat(MAX_STRING_LENGTH))),
            option(OPT_INFO, infoData("n".repeat(MAX_STRING_LENGTH + 1))),
            option(OPT_LIST_META_CONTEXT, metaContextData("n".repeat(MAX_STRING_LENGTH + 1))));

        assertError(peer.optionReply(), OPT_INFO, REP_ERR_UNKNOWN);
        assertError(peer.optionReply(), OPT_INFO, REP_ERR_INVALID);
        assertError(peer.optionReply(), OPT_LIST_META_CONTEXT, REP_ERR_INVALID);
        assertInHandshake(peer);

        peer.send(option(OPT_EXPORT_NAME, utf8("n".repeat(MAX_STRING_LENGTH + 1))));
        assertThat(peer.available()).isZero();
        assertThat(peer.channel.isOpen()).isFalse();
    }

    @Test
    void shouldKeepErrorMessagesShort() {
        final Peer peer = haggling();

        peer.send(option(OPT_INFO, infoData("\u20ac".repeat(1000))));

        final OptionReply reply = peer.optionReply();
        assertError(reply, OPT_INFO, REP_ERR_UNKNOWN);
        assertThat(reply.data().length).isLessThanOrEqualTo(200);
        assertThat(reply.text()).doesNotContain("\ufffd");
    }

    @Test
    void shouldCloseAfterTooManyOptions() {
        final NbdServerConfig config = new NbdServerConfig();
        config.maxOptions = 8;
        final Peer peer = connect(new NbdServerContext(config.conclude(), registry, Runnable::run));
        peer.greeting();
        peer.send(clientFlags(FLAGS));

        final byte[][] options = new byte[9][];
        for (int i = 0; i < options.length; i++) {
            options[i] = option(0x1000 + i);
        }
        peer.send(options);

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).hasSize(8);
        assertThat(replies).extracting(OptionReply::type).containsOnly(REP_ERR_UNSUP);
        assertThat(peer.channel.isOpen()).isFalse();
    }

    @Test
    void shouldCloseWhenHandshakeTimesOut() {
        final Peer peer = haggling();
        peer.send(option(OPT_STRUCTURED_REPLY));
        assertAck(peer.optionReply(), OPT_STRUCTURED_REPLY);

        peer.channel.advanceTimeBy(9, TimeUnit.SECONDS);
        peer.channel.runScheduledPendingTasks();
        assertThat(peer.channel.isOpen()).isTrue();

        peer.channel.advanceTimeBy(2, TimeUnit.SECONDS);
        peer.channel.runScheduledPendingTasks();
        assertThat(peer.channel.isOpen()).isFalse();
    }

    @Test
    void shouldCloseWhenClientSendsNothing() {
        final Peer peer = connect(context);

        peer.channel.advanceTimeBy(11, TimeUnit.SECONDS);
        peer.channel.runScheduledPendingTasks();

        assertThat(peer.channel.isOpen()).isFalse();
    }

    @Test
    void shouldNotTimeOutAfterTransmissionStarted() {
        final Peer peer = haggling();
        peer.send(option(OPT_GO, infoData("disk")));
        peer.optionReplies();
        assertInTransmission(peer);

        peer.channel.advanceTimeBy(1, TimeUnit.HOURS);
        peer.channel.runScheduledPendingTasks();

        assertThat(peer.channel.isOpen()).isTrue();
    }

    // ---------------------------------------------------------------- EXPORT_NAME and GO

    @Test
    void shouldCloseWithoutReplyOnExportNameForUnknownExport() {
        final Peer peer = haggling();

        peer.send(option(OPT_EXPORT_NAME, utf8("nope")));

        assertThat(peer.available()).isZero();
        assertThat(peer.channel.isOpen()).isFalse();
    }

    @Test
    void shouldAnswerExportNameWithoutZeroes() {
        final Peer peer = haggling();

        peer.send(option(OPT_EXPORT_NAME, utf8("disk")));

        final ByteBuffer reply = ByteBuffer.wrap(peer.takeAll());
        assertThat(reply.remaining()).isEqualTo(10);
        assertThat(reply.getLong()).isEqualTo(DISK_SIZE);
        assertThat(reply.getShort() & 0xffff).isEqualTo(EXPORT_FLAGS);
        assertInTransmission(peer);
    }

    @Test
    void shouldAnswerExportNameWithZeroesWhenClientDidNotAskForNone() {
        final Peer peer = connect(context);
        peer.greeting();

        peer.send(clientFlags(CLIENT_FLAG_FIXED_NEWSTYLE), option(OPT_EXPORT_NAME, utf8("disk")));

        final byte[] reply = peer.takeAll();
        assertThat(reply).hasSize(134);
        assertThat(ByteBuffer.wrap(reply).getLong()).isEqualTo(DISK_SIZE);
        for (int i = 10; i < reply.length; i++) {
            assertThat(reply[i]).isZero();
        }
        assertInTransmission(peer);
    }

    @Test
    void shouldOpenTheOnlyExportForEmptyName() {
        final Peer peer = haggling();

        peer.send(option(OPT_EXPORT_NAME));

        assertThat(peer.takeAll()).hasSize(10);
        assertInTransmission(peer);
    }

    @Test
    void shouldSwitchToTransmissionOnGo() {
        final Peer peer = haggling();

        peer.send(option(OPT_GO, infoData("disk", INFO_BLOCK_SIZE)));

        final List<OptionReply> replies = peer.optionReplies();
        assertThat(replies).extracting(OptionReply::type).containsExactly(REP_INFO, REP_INFO, REP_ACK);
        assertThat(replies).extracting(OptionReply::option).containsOnly(OPT_GO);
        assertAck(replies.get(2), OPT_GO);
        assertInTransmission(peer);
        assertThat(volume.size()).isEqualTo(DISK_SIZE);
        assertThat(registry.find("disk", null).stats().connectionsOpen()).isEqualTo(1);
    }

    @Test
    void shouldPassBytesPipelinedAfterGoToTransmission() {
        final Peer peer = connect(context);
        peer.greeting();

        // flags, GO and a READ of 512 bytes at 0 in one buffer
        peer.send(clientFlags(FLAGS), option(OPT_GO, infoData("disk")), request(0, 0, 77, 0, 512));

        assertThat(peer.optionReply().type()).isEqualTo(REP_INFO);
        assertThat(peer.optionReply().type()).isEqualTo(REP_INFO);
        assertAck(peer.optionReply(), OPT_GO);
        final SimpleReply read = peer.simpleReply(512);
        assertThat(read.error()).isZero();
        assertThat(read.cookie()).isEqualTo(77);
        assertThat(read.data()).isEqualTo(new byte[512]);
        assertThat(peer.available()).isZero();
        assertInTransmission(peer);
    }

    @Test
    void shouldPassBytesPipelinedAfterExportNameToTransmission() {
        final Peer peer = connect(context);
        peer.greeting();

        peer.send(clientFlags(FLAGS), option(OPT_EXPORT_NAME, utf8("disk")), request(0, 0, 78, 4096, 16));

        assertThat(peer.take(10)).hasSize(10);
        final SimpleReply read = peer.simpleReply(16);
        assertThat(read.cookie()).isEqualTo(78);
        assertThat(read.error()).isZero();
    }

    /** Everything a qemu-like client sends, from client flags to its first requests. */
    private static byte[] fullClientStream() {
        return concat(
            clientFlags(FLAGS),
            option(0x4242),
            option(OPT_LIST),
            option(OPT_STRUCTURED_REPLY),
            option(OPT_LIST_META_CONTEXT, metaContextData("disk")),
            option(OPT_SET_META_CONTEXT, metaContextData("disk", CONTEXT_BASE_ALLOCATION)),
            option(OPT_INFO, infoData("disk", INFO_NAME, INFO_DESCRIPTION)),
            option(OPT_GO, infoData("disk", INFO_BLOCK_SIZE)),
            request(0, 1, 1, 0, 8, new byte[] {1, 2, 3, 4, 5, 6, 7, 8}),
            request(0, 0, 2, 0, 8),
            request(0, 7, 3, 0, 1 << 20));
    }

    @Test
    void shouldGiveSameAnswersWhenWholeHandshakeIsSplitAtEveryByte() {
        final byte[] stream = fullClientStream();
        final Peer reference = connect(context);
        reference.greeting();
        reference.send(stream);
        final byte[] expected = reference.takeAll();
        assertInTransmission(reference);
        // sanity: 9 option replies plus READ/WRITE/BLOCK_STATUS replies
        assertThat(expected.length).isGreaterThan(300);

        for (int split = 1; split < stream.length; split++) {
            final Peer peer = new Peer(new EmbeddedChannel(new NbdHandshakeHandler(context)));
            try {
                peer.greeting();
                peer.send(java.util.Arrays.copyOfRange(stream, 0, split));
                peer.send(java.util.Arrays.copyOfRange(stream, split, stream.length));
                assertThat(peer.takeAll()).as("split at %d", split).isEqualTo(expected);
                assertInTransmission(peer);
            } finally {
                peer.close();
            }
        }
    }

    @Test
    void shouldGiveSameAnswersWhenHandshakeArrivesByteByByte() {
        final byte[] stream = fullClientStream();
        final Peer reference = connect(context);
        reference.greeting();
        reference.send(stream);
        final byte[] expected = reference.takeAll();

        final Peer peer = connect(context);
        peer.greeting();
        for (final byte b : stream) {
            peer.send(new byte[] {b});
        }
        assertThat(peer.takeAll()).isEqualTo(expected);
        assertInTransmission(peer);
    }

    @Test
    void shouldStartTransmissionWithStructuredRepliesAndBaseAllocation() {
        final Peer peer = connect(context);
        peer.greeting();
        peer.send(fullClientStream());

        final List<OptionReply> replies = new ArrayList<>();
        for (int i = 0; i < 15; i++) {
            replies.add(peer.optionReply());
        }
        assertThat(replies).extracting(OptionReply::type).containsExactly(
            REP_ERR_UNSUP,
            REP_SERVER, REP_ACK,
            REP_ACK,
            REP_META_CONTEXT, REP_META_CONTEXT, REP_ACK,
            REP_META_CONTEXT, REP_ACK,
            REP_INFO, REP_INFO, REP_INFO, REP_INFO, REP_ACK,
            REP_INFO);
        // GO: export, block size, ack
        assertThat(peer.optionReply().type()).isEqualTo(REP_INFO);
        assertAck(peer.optionReply(), OPT_GO);
        // transmission: replies come in request order here because storage runs inline
        final SimpleReply write = peer.simpleReply(0);
        assertThat(write.cookie()).isEqualTo(1);
        assertThat(write.error()).isZero();
        final Chunk read = peer.chunk();
        assertThat(read.cookie()).isEqualTo(2);
        assertThat(read.type()).isEqualTo(REPLY_TYPE_OFFSET_DATA);
        assertThat(read.done()).isTrue();
        assertThat(read.payload()).isEqualTo(new byte[] {0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8});
        final Chunk status = peer.chunk();
        assertThat(status.cookie()).isEqualTo(3);
        assertThat(status.type()).isEqualTo(REPLY_TYPE_BLOCK_STATUS);
        assertThat(status.done()).isTrue();
        assertThat(status.body().getInt()).isEqualTo(NbdHandshakeHandler.BASE_ALLOCATION_ID);
        assertThat(peer.available()).isZero();
    }

    @Test
    void shouldIgnoreBytesAfterCloseInSameBuffer() {
        final Peer peer = connect(context);
        peer.greeting();

        peer.send(clientFlags(FLAGS), option(OPT_EXPORT_NAME, utf8("nope")), option(OPT_LIST));

        assertThat(peer.available()).isZero();
        assertThat(peer.channel.isOpen()).isFalse();
    }

    @Test
    void shouldReleaseInboundWhenClosedMidOption() {
        final Peer peer = haggling();
        // Half an option, then the connection goes away: nothing must leak.
        peer.channel.writeInbound(Unpooled.wrappedBuffer(option(OPT_INFO, infoData("disk")), 0, 20));
        peer.channel.close();

        assertThat(peer.available()).isZero();
        assertThat(peer.channel.isOpen()).isFalse();
    }
}
