package io.nbdtail.nbd.codec;

import io.nbdtail.nbd.protocol.NbdConstants;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.UnpooledByteBufAllocator;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;

class NbdRepliesTest {
    private final ByteBufAllocator alloc = UnpooledByteBufAllocator.DEFAULT;
    private final List<ByteBuf> buffers = new ArrayList<>();

    @AfterEach
    void tearDown() {
        for (final ByteBuf b : buffers) {
            if (b.refCnt() > 0) {
                b.release();
            }
        }
    }

    // ---------------------------------------------------------------- transmission replies

    @Test
    void shouldEncodeSimpleReply() {
        final ByteBuf buf = keep(NbdReplies.simple(alloc, 0x0102030405060708L, 22));

        // magic 0x67446698, error 22 (EINVAL), cookie
        assertThat(hex(buf)).isEqualTo("67446698" + "00000016" + "0102030405060708");
        assertThat(buf.readableBytes()).isEqualTo(NbdConstants.SIMPLE_REPLY_LENGTH);
    }

    @Test
    void shouldEncodeSimpleReplyWithNegativeCookieVerbatim() {
        final ByteBuf buf = keep(NbdReplies.simple(alloc, -2L, 0));

        // magic, error 0, cookie 0xfffffffffffffffe: the cookie is opaque
        assertThat(hex(buf)).isEqualTo("67446698" + "00000000" + "fffffffffffffffe");
    }

    @Test
    void shouldEncodeChunkHeader() {
        final ByteBuf buf = keep(alloc.buffer());
        NbdReplies.writeChunkHeader(buf, NbdConstants.REPLY_FLAG_DONE, NbdConstants.REPLY_TYPE_OFFSET_DATA, 0x2aL,
            0x1008);

        // magic 0x668e33ef, flags DONE, type OFFSET_DATA (1), cookie 42, length 4104
        assertThat(hex(buf)).isEqualTo("668e33ef" + "0001" + "0001" + "000000000000002a" + "00001008");
        assertThat(buf.readableBytes()).isEqualTo(NbdConstants.CHUNK_HEADER_LENGTH);
    }

    @Test
    void shouldEncodeDoneChunk() {
        final ByteBuf buf = keep(NbdReplies.done(alloc, 7));

        // magic, flags DONE, type NONE (0), cookie 7, length 0
        assertThat(hex(buf)).isEqualTo("668e33ef" + "0001" + "0000" + "0000000000000007" + "00000000");
    }

    @Test
    void shouldEncodeHoleChunk() {
        final ByteBuf buf = keep(alloc.buffer());
        NbdReplies.writeHole(buf, false, 3, 0x100000000L, 65536);
        NbdReplies.writeHole(buf, true, 3, 0x100010000L, 512);

        // magic, flags 0, type OFFSET_HOLE (2), cookie 3, length 12, offset 4 GiB, hole length 64 KiB
        // then the same with DONE, offset 4 GiB + 64 KiB, hole length 512
        assertThat(hex(buf)).isEqualTo(
            "668e33ef" + "0000" + "0002" + "0000000000000003" + "0000000c" + "0000000100000000" + "00010000"
                + "668e33ef" + "0001" + "0002" + "0000000000000003" + "0000000c" + "0000000100010000" + "00000200");
    }

    @Test
    void shouldEncodeErrorChunk() {
        final ByteBuf buf = keep(NbdReplies.error(alloc, 9, 5, "disk", -1));

        // magic, flags DONE, type ERROR (0x8001), cookie 9, length 10, error 5 (EIO), message length 4, "disk"
        assertThat(hex(buf)).isEqualTo("668e33ef" + "0001" + "8001" + "0000000000000009" + "0000000a"
            + "00000005" + "0004" + "6469736b");
    }

    @Test
    void shouldEncodeErrorOffsetChunk() {
        final ByteBuf buf = keep(NbdReplies.error(alloc, 9, 5, "x", 0x1000));

        // magic, flags DONE, type ERROR_OFFSET (0x8002), cookie 9, length 15, error EIO, length 1, "x", offset 4096
        assertThat(hex(buf)).isEqualTo("668e33ef" + "0001" + "8002" + "0000000000000009" + "0000000f"
            + "00000005" + "0001" + "78" + "0000000000001000");
    }

    @Test
    void shouldEncodeErrorChunkWithEmptyMessage() {
        final ByteBuf buf = keep(NbdReplies.error(alloc, 1, 22, "", -1));

        // magic, flags DONE, type ERROR, cookie 1, length 6, error EINVAL, message length 0
        assertThat(hex(buf)).isEqualTo("668e33ef" + "0001" + "8001" + "0000000000000001" + "00000006"
            + "00000016" + "0000");
    }

    @Test
    void shouldTruncateLongErrorMessageAtUtf8Boundary() {
        // 100 x U+20AC EURO SIGN, 3 bytes each = 300 bytes; 200 is not a multiple of 3, so the cut backs off to 198.
        final String message = "\u20ac".repeat(100);
        final ByteBuf buf = keep(NbdReplies.error(alloc, 1, 5, message, 0));

        assertThat(buf.readableBytes()).isLessThan(1000);
        final int payloadLength = buf.getInt(16);
        assertThat(payloadLength).isEqualTo(buf.readableBytes() - NbdConstants.CHUNK_HEADER_LENGTH);
        final int textLength = buf.getUnsignedShort(24);
        assertThat(textLength).isEqualTo(198).isLessThanOrEqualTo(NbdReplies.MAX_ERROR_MESSAGE);
        assertThat(payloadLength).isEqualTo(4 + 2 + textLength + 8);
        final String text = buf.toString(26, textLength, StandardCharsets.UTF_8);
        assertThat(text).isEqualTo("\u20ac".repeat(66));
        assertThat(buf.getLong(26 + textLength)).isZero(); // the offset follows the text
    }

    @Test
    void shouldTruncateAtEveryMixOfCharacterWidths() {
        // 1-, 2-, 3- and 4-byte characters (a surrogate pair for U+1F600) in every alignment.
        final String unit = "a\u00e9\u20ac\ud83d\ude00";
        for (int prefix = 0; prefix < 10; prefix++) {
            final String message = "b".repeat(prefix) + unit.repeat(40);
            final byte[] cut = NbdReplies.truncatedUtf8(message, NbdReplies.MAX_ERROR_MESSAGE);
            assertThat(cut.length).isLessThanOrEqualTo(NbdReplies.MAX_ERROR_MESSAGE)
                .isGreaterThan(NbdReplies.MAX_ERROR_MESSAGE - 4);
            final String decoded = new String(cut, StandardCharsets.UTF_8);
            assertThat(decoded).doesNotContain("\ufffd");
            assertThat(message).startsWith(decoded);
            assertThat(decoded.getBytes(StandardCharsets.UTF_8)).isEqualTo(cut);
        }
    }

    @Test
    void shouldNotTruncateMessageThatFits() {
        final String exact = "\u00e9".repeat(NbdReplies.MAX_ERROR_MESSAGE / 2);
        assertThat(NbdReplies.truncatedUtf8(exact, NbdReplies.MAX_ERROR_MESSAGE))
            .isEqualTo(exact.getBytes(StandardCharsets.UTF_8));
        assertThat(NbdReplies.truncatedUtf8("", 10)).isEmpty();
    }

    @Test
    void shouldKeepHugeErrorMessageWellBelowQemuLimit() {
        final ByteBuf buf = keep(NbdReplies.error(alloc, 1, 5, "\ud83d\ude00".repeat(10_000), 1234));

        assertThat(buf.readableBytes()).isLessThan(1000);
        assertThat(buf.getUnsignedShort(24)).isEqualTo(200); // 50 four-byte characters
    }

    // ---------------------------------------------------------------- option replies

    @Test
    void shouldEncodeOptionAck() {
        final ByteBuf buf = keep(NbdReplies.optionAck(alloc, NbdConstants.OPT_STRUCTURED_REPLY));

        // magic 0x0003e889045565a9, option 8, type ACK (1), length 0
        assertThat(hex(buf)).isEqualTo("0003e889045565a9" + "00000008" + "00000001" + "00000000");
        assertThat(buf.readableBytes()).isEqualTo(NbdConstants.OPTION_REPLY_HEADER_LENGTH);
    }

    @Test
    void shouldEncodeOptionError() {
        final ByteBuf buf = keep(NbdReplies.optionError(alloc, 0x1234, NbdConstants.REP_ERR_UNSUP, "no"));

        // magic, option 0x1234, type ERR_UNSUP (2^31 + 1), length 2, "no"
        assertThat(hex(buf)).isEqualTo("0003e889045565a9" + "00001234" + "80000001" + "00000002" + "6e6f");
    }

    @Test
    void shouldTruncateOptionErrorMessage() {
        final ByteBuf buf = keep(NbdReplies.optionError(alloc, 1, NbdConstants.REP_ERR_INVALID,
            "\u00e9".repeat(1000)));

        assertThat(buf.getInt(16)).isEqualTo(NbdReplies.MAX_ERROR_MESSAGE);
        assertThat(buf.readableBytes()).isEqualTo(20 + NbdReplies.MAX_ERROR_MESSAGE);
    }

    @Test
    void shouldEncodeOptionServer() {
        final ByteBuf buf = keep(NbdReplies.optionServer(alloc, NbdConstants.OPT_LIST, "disk", "test"));

        // magic, option LIST (3), type SERVER (2), length 12, name length 4, "disk", "test"
        assertThat(hex(buf)).isEqualTo("0003e889045565a9" + "00000003" + "00000002" + "0000000c"
            + "00000004" + "6469736b" + "74657374");
    }

    @Test
    void shouldEncodeOptionServerWithEmptyDescription() {
        final ByteBuf buf = keep(NbdReplies.optionServer(alloc, NbdConstants.OPT_LIST, "d", ""));

        // magic, option LIST, type SERVER, length 5, name length 1, "d"
        assertThat(hex(buf)).isEqualTo("0003e889045565a9" + "00000003" + "00000002" + "00000005"
            + "00000001" + "64");
    }

    @Test
    void shouldEncodeInfoExport() {
        final ByteBuf buf = keep(NbdReplies.infoExport(alloc, NbdConstants.OPT_GO, 16L << 20, 0x0dbd));

        // magic, option GO (7), type INFO (3), length 12, info EXPORT (0), size 16 MiB, flags 0x0dbd
        assertThat(hex(buf)).isEqualTo("0003e889045565a9" + "00000007" + "00000003" + "0000000c"
            + "0000" + "0000000001000000" + "0dbd");
    }

    @Test
    void shouldEncodeInfoName() {
        final ByteBuf buf = keep(NbdReplies.infoString(alloc, NbdConstants.OPT_INFO, NbdConstants.INFO_NAME, "disk"));

        // magic, option INFO (6), type INFO, length 6, info NAME (1), "disk"
        assertThat(hex(buf)).isEqualTo("0003e889045565a9" + "00000006" + "00000003" + "00000006"
            + "0001" + "6469736b");
    }

    @Test
    void shouldEncodeInfoDescription() {
        final ByteBuf buf = keep(NbdReplies.infoString(alloc, NbdConstants.OPT_INFO, NbdConstants.INFO_DESCRIPTION,
            "\u00e9"));

        // magic, option INFO, type INFO, length 4, info DESCRIPTION (2), "é" in UTF-8
        assertThat(hex(buf)).isEqualTo("0003e889045565a9" + "00000006" + "00000003" + "00000004"
            + "0002" + "c3a9");
    }

    @Test
    void shouldEncodeInfoBlockSize() {
        final ByteBuf buf = keep(NbdReplies.infoBlockSize(alloc, NbdConstants.OPT_GO, 1, 4096, 32 << 20));

        // magic, option GO, type INFO, length 14, info BLOCK_SIZE (3), minimum 1, preferred 4096, maximum 32 MiB
        assertThat(hex(buf)).isEqualTo("0003e889045565a9" + "00000007" + "00000003" + "0000000e"
            + "0003" + "00000001" + "00001000" + "02000000");
    }

    @Test
    void shouldEncodeMetaContext() {
        final ByteBuf buf = keep(NbdReplies.metaContext(alloc, NbdConstants.OPT_SET_META_CONTEXT, 1,
            NbdConstants.CONTEXT_BASE_ALLOCATION));

        // magic, option SET_META_CONTEXT (10), type META_CONTEXT (4), length 19, id 1, "base:allocation"
        assertThat(hex(buf)).isEqualTo("0003e889045565a9" + "0000000a" + "00000004" + "00000013"
            + "00000001" + hexOf("base:allocation"));
    }

    @Test
    void shouldEncodeExportNameReplyWithZeroes() {
        final ByteBuf buf = keep(NbdReplies.exportNameReply(alloc, 1L << 40, 0x0003, false));

        // size 1 TiB, flags HAS_FLAGS|READ_ONLY, then 124 zero bytes
        assertThat(buf.readableBytes()).isEqualTo(134);
        assertThat(hex(buf)).isEqualTo("0000010000000000" + "0003" + "00".repeat(124));
    }

    @Test
    void shouldEncodeExportNameReplyWithoutZeroes() {
        final ByteBuf buf = keep(NbdReplies.exportNameReply(alloc, 1L << 40, 0x0003, true));

        // size 1 TiB, flags HAS_FLAGS|READ_ONLY
        assertThat(buf.readableBytes()).isEqualTo(10);
        assertThat(hex(buf)).isEqualTo("0000010000000000" + "0003");
    }

    @Test
    void shouldEncodeGreeting() {
        final ByteBuf buf = keep(NbdReplies.greeting(alloc));

        // "NBDMAGIC", "IHAVEOPT", handshake flags FIXED_NEWSTYLE|NO_ZEROES
        assertThat(buf.readableBytes()).isEqualTo(18);
        assertThat(hex(buf)).isEqualTo(hexOf("NBDMAGIC") + hexOf("IHAVEOPT") + "0003");
    }

    @Test
    void shouldHexDumpForLogs() {
        final ByteBuf buf = keep(NbdReplies.simple(alloc, 1, 0));
        assertThat(NbdReplies.hex(buf)).isEqualTo("674466980000000000000000000000" + "01");
        assertThat(buf.readerIndex()).isZero();
    }

    // ---------------------------------------------------------------- helpers

    private ByteBuf keep(final ByteBuf buf) {
        buffers.add(buf);
        return buf;
    }

    private static String hex(final ByteBuf buf) {
        return ByteBufUtil.hexDump(buf);
    }

    private static String hexOf(final String ascii) {
        return ByteBufUtil.hexDump(ascii.getBytes(StandardCharsets.UTF_8));
    }
}
