package io.nbdtail.nbd.codec;

import io.nbdtail.nbd.protocol.NbdConstants;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.ByteBufUtil;

import java.nio.charset.StandardCharsets;

/**
 * Encodes server-to-client messages straight into buffers, one owner class for every reply layout.
 *
 * <p>Simple reply (16 bytes):
 * <pre>
 *  0: magic 0x67446698 (4) | 4: error (4) | 8: cookie (8) | 16: data (READ only)
 * </pre>
 * Structured reply chunk (20-byte header):
 * <pre>
 *  0: magic 0x668e33ef (4) | 4: flags (2) | 6: type (2) | 8: cookie (8) | 16: length (4) | 20: payload
 *     OFFSET_DATA  payload: offset (8), data
 *     OFFSET_HOLE  payload: offset (8), hole length (4)
 *     BLOCK_STATUS payload: context id (4), n x (extent length (4), flags (4))
 *     ERROR        payload: error (4), message length (2), message
 *     ERROR_OFFSET payload: error (4), message length (2), message, offset (8)
 * </pre>
 * Option reply (fixed newstyle, 20-byte header):
 * <pre>
 *  0: magic 0x3e889045565a9 (8) | 8: option (4) | 12: reply type (4) | 16: length (4) | 20: data
 * </pre>
 *
 * <p>Every method returns a new buffer owned by the caller (who normally writes it to the channel).
 */
public final class NbdReplies {
    /**
     * Longest error message sent in an error chunk. qemu reads non-data chunks into a buffer capped at 1000
     * bytes and drops the connection beyond it, so the whole chunk payload must stay well below that.
     */
    public static final int MAX_ERROR_MESSAGE = 200;
    /** Header room reserved in a READ buffer: a chunk header plus its 8-byte offset. */
    public static final int READ_HEADROOM = NbdConstants.CHUNK_HEADER_LENGTH + 8;

    private NbdReplies() {
    }

    // ---------------------------------------------------------------- transmission replies

    public static ByteBuf simple(final ByteBufAllocator alloc, final long cookie, final int error) {
        final ByteBuf buf = alloc.ioBuffer(NbdConstants.SIMPLE_REPLY_LENGTH);
        writeSimpleHeader(buf, cookie, error);
        return buf;
    }

    public static void writeSimpleHeader(final ByteBuf buf, final long cookie, final int error) {
        buf.writeInt(NbdConstants.SIMPLE_REPLY_MAGIC);
        buf.writeInt(error);
        buf.writeLong(cookie);
    }

    public static void writeChunkHeader(final ByteBuf buf, final int flags, final int type, final long cookie,
                                        final int length) {
        buf.writeInt(NbdConstants.STRUCTURED_REPLY_MAGIC);
        buf.writeShort(flags);
        buf.writeShort(type);
        buf.writeLong(cookie);
        buf.writeInt(length);
    }

    /** A NONE chunk with DONE: the successful end of a structured reply that needs no payload. */
    public static ByteBuf done(final ByteBufAllocator alloc, final long cookie) {
        final ByteBuf buf = alloc.ioBuffer(NbdConstants.CHUNK_HEADER_LENGTH);
        writeChunkHeader(buf, NbdConstants.REPLY_FLAG_DONE, NbdConstants.REPLY_TYPE_NONE, cookie, 0);
        return buf;
    }

    /** Writes an OFFSET_HOLE chunk. */
    public static void writeHole(final ByteBuf buf, final boolean last, final long cookie, final long offset,
                                 final int length) {
        writeChunkHeader(buf, last ? NbdConstants.REPLY_FLAG_DONE : 0, NbdConstants.REPLY_TYPE_OFFSET_HOLE, cookie,
            12);
        buf.writeLong(offset);
        buf.writeInt(length);
    }

    /**
     * An error chunk (with DONE) carrying a short message. With {@code offset >= 0} it is ERROR_OFFSET, naming
     * the first byte that failed.
     */
    public static ByteBuf error(final ByteBufAllocator alloc, final long cookie, final int error,
                                final String message, final long offset) {
        final byte[] text = truncatedUtf8(message, MAX_ERROR_MESSAGE);
        final boolean withOffset = offset >= 0;
        final int payload = 6 + text.length + (withOffset ? 8 : 0);
        final ByteBuf buf = alloc.ioBuffer(NbdConstants.CHUNK_HEADER_LENGTH + payload);
        writeChunkHeader(buf, NbdConstants.REPLY_FLAG_DONE,
            withOffset ? NbdConstants.REPLY_TYPE_ERROR_OFFSET : NbdConstants.REPLY_TYPE_ERROR, cookie, payload);
        buf.writeInt(error);
        buf.writeShort(text.length);
        buf.writeBytes(text);
        if (withOffset) {
            buf.writeLong(offset);
        }
        return buf;
    }

    // ---------------------------------------------------------------- option replies

    public static ByteBuf optionReply(final ByteBufAllocator alloc, final int option, final int type,
                                      final int dataLength) {
        final ByteBuf buf = alloc.ioBuffer(NbdConstants.OPTION_REPLY_HEADER_LENGTH + dataLength);
        buf.writeLong(NbdConstants.OPTION_REPLY_MAGIC);
        buf.writeInt(option);
        buf.writeInt(type);
        buf.writeInt(dataLength);
        return buf;
    }

    public static ByteBuf optionAck(final ByteBufAllocator alloc, final int option) {
        return optionReply(alloc, option, NbdConstants.REP_ACK, 0);
    }

    /** An option error reply with a human-readable message (bit 31 of {@code type} set). */
    public static ByteBuf optionError(final ByteBufAllocator alloc, final int option, final int type,
                                      final String message) {
        final byte[] text = truncatedUtf8(message, MAX_ERROR_MESSAGE);
        final ByteBuf buf = optionReply(alloc, option, type, text.length);
        buf.writeBytes(text);
        return buf;
    }

    /** NBD_REP_SERVER: u32 name length, name, description. */
    public static ByteBuf optionServer(final ByteBufAllocator alloc, final int option, final String name,
                                       final String description) {
        final byte[] n = name.getBytes(StandardCharsets.UTF_8);
        final byte[] d = truncatedUtf8(description, NbdConstants.MAX_STRING_LENGTH);
        final ByteBuf buf = optionReply(alloc, option, NbdConstants.REP_SERVER, 4 + n.length + d.length);
        buf.writeInt(n.length);
        buf.writeBytes(n);
        buf.writeBytes(d);
        return buf;
    }

    /** NBD_REP_INFO with NBD_INFO_EXPORT: size and transmission flags. */
    public static ByteBuf infoExport(final ByteBufAllocator alloc, final int option, final long size,
                                     final int transmissionFlags) {
        final ByteBuf buf = optionReply(alloc, option, NbdConstants.REP_INFO, 12);
        buf.writeShort(NbdConstants.INFO_EXPORT);
        buf.writeLong(size);
        buf.writeShort(transmissionFlags);
        return buf;
    }

    /** NBD_REP_INFO with NBD_INFO_NAME or NBD_INFO_DESCRIPTION. */
    public static ByteBuf infoString(final ByteBufAllocator alloc, final int option, final int infoType,
                                     final String value) {
        final byte[] v = truncatedUtf8(value, NbdConstants.MAX_STRING_LENGTH);
        final ByteBuf buf = optionReply(alloc, option, NbdConstants.REP_INFO, 2 + v.length);
        buf.writeShort(infoType);
        buf.writeBytes(v);
        return buf;
    }

    /** NBD_REP_INFO with NBD_INFO_BLOCK_SIZE. */
    public static ByteBuf infoBlockSize(final ByteBufAllocator alloc, final int option, final int minimum,
                                        final int preferred, final int maximum) {
        final ByteBuf buf = optionReply(alloc, option, NbdConstants.REP_INFO, 14);
        buf.writeShort(NbdConstants.INFO_BLOCK_SIZE);
        buf.writeInt(minimum);
        buf.writeInt(preferred);
        buf.writeInt(maximum);
        return buf;
    }

    /** NBD_REP_META_CONTEXT: u32 context id, name. */
    public static ByteBuf metaContext(final ByteBufAllocator alloc, final int option, final int id,
                                      final String name) {
        final byte[] n = name.getBytes(StandardCharsets.UTF_8);
        final ByteBuf buf = optionReply(alloc, option, NbdConstants.REP_META_CONTEXT, 4 + n.length);
        buf.writeInt(id);
        buf.writeBytes(n);
        return buf;
    }

    /** The reply to NBD_OPT_EXPORT_NAME: size, flags and, unless NO_ZEROES was negotiated, 124 zeros. */
    public static ByteBuf exportNameReply(final ByteBufAllocator alloc, final long size, final int flags,
                                          final boolean noZeroes) {
        final int length = 10 + (noZeroes ? 0 : NbdConstants.EXPORT_NAME_ZEROES);
        final ByteBuf buf = alloc.ioBuffer(length);
        buf.writeLong(size);
        buf.writeShort(flags);
        if (!noZeroes) {
            buf.writeZero(NbdConstants.EXPORT_NAME_ZEROES);
        }
        return buf;
    }

    /** The newstyle greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
    public static ByteBuf greeting(final ByteBufAllocator alloc) {
        final ByteBuf buf = alloc.ioBuffer(NbdConstants.GREETING_LENGTH);
        buf.writeLong(NbdConstants.NBDMAGIC);
        buf.writeLong(NbdConstants.IHAVEOPT);
        buf.writeShort(NbdConstants.FLAG_FIXED_NEWSTYLE | NbdConstants.FLAG_NO_ZEROES);
        return buf;
    }

    /** UTF-8 bytes of {@code s}, cut at a character boundary so that they fit in {@code max} bytes. */
    static byte[] truncatedUtf8(final String s, final int max) {
        final byte[] bytes = s.getBytes(StandardCharsets.UTF_8);
        if (bytes.length <= max) {
            return bytes;
        }
        int end = max;
        while (end > 0 && (bytes[end] & 0xC0) == 0x80) {
            end--;
        }
        final byte[] cut = new byte[end];
        System.arraycopy(bytes, 0, cut, 0, end);
        return cut;
    }

    /** For logs and tests. */
    public static String hex(final ByteBuf buf) {
        return ByteBufUtil.hexDump(buf);
    }
}
