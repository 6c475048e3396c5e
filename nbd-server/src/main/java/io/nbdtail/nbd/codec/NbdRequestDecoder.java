package io.nbdtail.nbd.codec;

import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.protocol.NbdProtocolException;
import io.nbdtail.nbd.protocol.NbdRequest;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;

import java.util.List;

/**
 * Turns the transmission-phase byte stream into {@link NbdRequest}s.
 *
 * <p>The 28-byte header is read as soon as it is complete. A WRITE whose whole payload came in with the header
 * (the usual case for small writes) hands it on as a retained slice of the cumulation buffer, without a copy.
 * A payload that spans socket reads is gathered into one pooled direct buffer of exactly its length, allocated
 * once the header has been checked: each byte is copied once, and the cumulation never grows. (The default
 * merge cumulator would instead grow the cumulation by doubling, copying what it holds each time, and copy it
 * again while an earlier payload's slice still shares it; see {@code LargeWriteDecodeBenchmark}.) With a
 * {@link PayloadRecvByteBufAllocator} on the channel, the socket reads the rest of a large payload straight into
 * that buffer, and nothing is copied at all. A WRITE longer than
 * {@code maxPayload} is answered without buffering its payload: the request is passed on at once, flagged
 * {@link NbdRequest#payloadDropped()}, and the payload bytes are skipped as they arrive, up to
 * {@code maxDiscard}; beyond that the connection is closed, because keeping the stream in step would mean
 * reading gigabytes for nothing.
 *
 * <p>A bad request magic means the stream is out of step, so the connection is closed; anything after it is
 * discarded unread.
 */
public final class NbdRequestDecoder extends ByteToMessageDecoder {
    private enum State {
        /** Waiting for a complete 28-byte request header. */
        READ_HEADER,
        /** Gathering the payload of a WRITE that is within limits into {@link #payload}. */
        READ_PAYLOAD,
        /** Skipping the payload of a WRITE that was too large to accept. */
        DISCARD_PAYLOAD,
        /** The stream is broken; everything is dropped until the channel closes. */
        BAD_MESSAGE
    }

    private final int maxPayload;
    private final long maxDiscard;

    private State state = State.READ_HEADER;
    private int flags;
    private int type;
    private long cookie;
    private long offset;
    private long length;
    private long discardRemaining;
    /** Requests decoded so far; with {@link #midRequest()} lets a timer see a request that never completes. */
    private long decoded;
    /** The payload being gathered in {@link State#READ_PAYLOAD}; owned by the decoder until it is handed on. */
    private ByteBuf payload;
    /** Whether the socket's bytes are the decoder's bytes, so that payloads may be read straight from it. */
    private final boolean directReceive;

    /**
     * @param maxPayload the largest WRITE payload that is accepted and buffered.
     * @param maxDiscard the largest WRITE payload that is skipped (and answered with an error) rather than
     *                   ending the connection.
     */
    public NbdRequestDecoder(final int maxPayload, final long maxDiscard) {
        this(maxPayload, maxDiscard, true);
    }

    /**
     * @param directReceive {@code false} when a handler in front of the decoder transforms the bytes (TLS): the
     *                      socket must then never read into a payload buffer, because what it reads is
     *                      ciphertext that the TLS handler has to see first.
     */
    public NbdRequestDecoder(final int maxPayload, final long maxDiscard, final boolean directReceive) {
        this.directReceive = directReceive;
        if (maxPayload <= 0 || maxDiscard < maxPayload) {
            throw new IllegalArgumentException("need 0 < maxPayload <= maxDiscard: maxPayload=" + maxPayload
                + ", maxDiscard=" + maxDiscard);
        }
        this.maxPayload = maxPayload;
        this.maxDiscard = maxDiscard;
    }

    /** Requests decoded so far on this connection. */
    public long decoded() {
        return decoded;
    }

    /** Whether part of a request (header or WRITE payload) has arrived and the rest has not. */
    public boolean midRequest() {
        return state == State.READ_PAYLOAD || state == State.DISCARD_PAYLOAD
            || (state == State.READ_HEADER && actualReadableBytes() > 0);
    }

    @Override
    protected void decode(final ChannelHandlerContext ctx, final ByteBuf in, final List<Object> out) {
        switch (state) {
            case READ_HEADER:
                if (in.readableBytes() < NbdConstants.REQUEST_LENGTH) {
                    return;
                }
                final int magic = in.readInt();
                if (magic != NbdConstants.REQUEST_MAGIC) {
                    state = State.BAD_MESSAGE;
                    in.skipBytes(in.readableBytes());
                    throw new NbdProtocolException("bad request magic 0x" + Integer.toHexString(magic));
                }
                flags = in.readUnsignedShort();
                type = in.readUnsignedShort();
                cookie = in.readLong();
                offset = in.readLong();
                length = in.readUnsignedInt();
                if (type != NbdCommand.WRITE.type() || length == 0) {
                    decoded++;
                    out.add(NbdRequest.newInstance(flags, type, cookie, offset, length, null, false));
                    return;
                }
                if (length > maxPayload) {
                    if (length > maxDiscard) {
                        state = State.BAD_MESSAGE;
                        in.skipBytes(in.readableBytes());
                        throw new NbdProtocolException("WRITE payload of " + length + " bytes exceeds "
                            + maxDiscard + " bytes");
                    }
                    decoded++;
                    out.add(NbdRequest.newInstance(flags, type, cookie, offset, length, null, true));
                    discardRemaining = length;
                    state = State.DISCARD_PAYLOAD;
                    return;
                }
                if (in.readableBytes() >= length) {
                    out.add(NbdRequest.newInstance(flags, type, cookie, offset, length,
                        in.readRetainedSlice((int) length), false));
                    return;
                }
                payload = ctx.alloc().directBuffer((int) length, (int) length);
                state = State.READ_PAYLOAD;
                // fall through: copy what is already here
            case READ_PAYLOAD:
                final int n = Math.min(in.readableBytes(), payload.writableBytes());
                if (in.hasMemoryAddress() && payload.hasMemoryAddress()
                    && in.memoryAddress() + in.readerIndex() == payload.memoryAddress() + payload.writerIndex()) {
                    // The socket read into the payload itself (receiveTarget): the bytes are already in place.
                    payload.writerIndex(payload.writerIndex() + n);
                    in.skipBytes(n);
                } else {
                    in.readBytes(payload, n);
                }
                if (payload.isWritable()) {
                    return;
                }
                final ByteBuf complete = payload;
                payload = null;
                state = State.READ_HEADER;
                decoded++;
                out.add(NbdRequest.newInstance(flags, type, cookie, offset, length, complete, false));
                return;
            case DISCARD_PAYLOAD:
                final int skip = (int) Math.min(in.readableBytes(), discardRemaining);
                in.skipBytes(skip);
                discardRemaining -= skip;
                if (discardRemaining == 0) {
                    state = State.READ_HEADER;
                }
                return;
            case BAD_MESSAGE:
                in.skipBytes(in.readableBytes());
                return;
            default:
                throw new IllegalStateException("unknown state " + state);
        }
    }

    /**
     * Where the next socket read should go: a slice of the missing part of the payload being gathered, if at least
     * {@code minBytes} are missing; {@code null} for a normal receive buffer. The caller owns the slice (one
     * reference) and hands it back through the pipeline as the bytes read, as with any receive buffer.
     */
    ByteBuf receiveTarget(final int minBytes) {
        final ByteBuf p = payload;
        if (state != State.READ_PAYLOAD || p == null || p.writableBytes() < minBytes || !p.hasMemoryAddress()) {
            return null;
        }
        return p.retainedSlice(p.writerIndex(), p.writableBytes()).clear();
    }

    @Override
    public void handlerAdded(final ChannelHandlerContext ctx) {
        if (directReceive
            && ctx.channel().config().getRecvByteBufAllocator() instanceof PayloadRecvByteBufAllocator a) {
            a.register(this);
        }
    }

    @Override
    protected void handlerRemoved0(final ChannelHandlerContext ctx) {
        if (ctx.channel().config().getRecvByteBufAllocator() instanceof PayloadRecvByteBufAllocator a) {
            a.unregister(this);
        }
        // The connection closed (or the decoder was removed) in the middle of a payload.
        final ByteBuf p = payload;
        payload = null;
        if (p != null) {
            p.release();
        }
    }
}
