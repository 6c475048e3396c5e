package io.nbdtail.nbd.codec;

import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.protocol.NbdProtocolException;
import io.nbdtail.nbd.protocol.NbdRequest;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.List;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;

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
 * <p>Every WRITE payload is counted in the server's {@link BufferBudget} until it is released. A payload that
 * must be gathered and does not fit waits before its buffer is allocated: the decoder stops the channel
 * reading ({@link #awaitingBuffer()}) and resumes when the budget has room, then fires
 * {@link #BUFFER_AVAILABLE} so that the handler behind it can decide about reading again.
 *
 * <p>A bad request magic means the stream is out of step, so the connection is closed; anything after it is
 * discarded unread.
 */
public final class NbdRequestDecoder extends ByteToMessageDecoder {
    private enum State {
        /** Waiting for a complete 28-byte request header. */
        READ_HEADER,
        /** A WRITE's header is read; its payload's buffer waits for room in the budget. */
        AWAIT_BUFFER,
        /** Gathering the payload of a WRITE that is within limits into {@link #payload}. */
        READ_PAYLOAD,
        /** Skipping the payload of a WRITE that was too large to accept. */
        DISCARD_PAYLOAD,
        /** The stream is broken; everything is dropped until the channel closes. */
        BAD_MESSAGE
    }

    /** Fired down the pipeline when a payload that waited for the budget got its buffer. */
    public static final Object BUFFER_AVAILABLE = new Object() {
        @Override
        public String toString() {
            return "BUFFER_AVAILABLE";
        }
    };
    private static final Logger LOG = LoggerFactory.getLogger(NbdRequestDecoder.class);
    /** Retry delay after the JVM itself refused a buffer that the budget allowed. */
    private static final long OUT_OF_MEMORY_RETRY_MILLIS = 10;

    private final int maxPayload;
    private final long maxDiscard;
    private final BufferBudget budget;
    /** Whether the socket's bytes are the decoder's bytes, so that payloads may be read straight from it. */
    private final boolean directReceive;
    private final Runnable wake = this::wake;
    private ChannelHandlerContext ctx;
    /** Whether this connection has logged a direct memory shortage (once is enough). */
    private boolean warned;

    private State state = State.READ_HEADER;
    private int flags;
    private int type;
    private long cookie;
    private long offset;
    private long length;
    private long discardRemaining;
    /** Requests decoded so far; with {@link #midRequest()} lets a timer see a request that never completes. */
    private long decoded;
    /** {@link #decoded} at the last {@link #channelReadComplete}. */
    private long decodedAtReadComplete;
    /** The payload being gathered in {@link State#READ_PAYLOAD}; owned by the decoder until it is handed on. */
    private ByteBuf payload;

    /**
     * @param maxPayload the largest WRITE payload that is accepted and buffered.
     * @param maxDiscard the largest WRITE payload that is skipped (and answered with an error) rather than
     *                   ending the connection.
     */
    public NbdRequestDecoder(final int maxPayload, final long maxDiscard) {
        this(maxPayload, maxDiscard, BufferBudget.unlimited(), true);
    }

    /**
     * @param budget        where every WRITE payload is counted; shared by all connections of a server.
     * @param directReceive {@code false} when a handler in front of the decoder transforms the bytes (TLS): the
     *                      socket must then never read into a payload buffer, because what it reads is
     *                      ciphertext that the TLS handler has to see first.
     */
    public NbdRequestDecoder(final int maxPayload, final long maxDiscard, final BufferBudget budget,
                             final boolean directReceive) {
        this.directReceive = directReceive;
        if (maxPayload <= 0 || maxDiscard < maxPayload) {
            throw new IllegalArgumentException("need 0 < maxPayload <= maxDiscard: maxPayload=" + maxPayload
                + ", maxDiscard=" + maxDiscard);
        }
        this.maxPayload = maxPayload;
        this.maxDiscard = maxDiscard;
        this.budget = budget;
    }

    /** Requests decoded so far on this connection. */
    public long decoded() {
        return decoded;
    }

    /** Whether part of a request (header or WRITE payload) has arrived and the rest has not. */
    public boolean midRequest() {
        return state == State.READ_PAYLOAD || state == State.DISCARD_PAYLOAD || state == State.AWAIT_BUFFER
            || (state == State.READ_HEADER && actualReadableBytes() > 0);
    }

    /** Whether a WRITE payload's buffer is allocated (and counted in the budget) and still being filled. */
    public boolean gatheringPayload() {
        return state == State.READ_PAYLOAD;
    }

    /** Whether a payload waits for room in the budget; the channel must not read meanwhile. */
    public boolean awaitingBuffer() {
        return state == State.AWAIT_BUFFER;
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
                    // Already in memory: counted, never waited for.
                    budget.reserve(length);
                    decoded++;
                    out.add(NbdRequest.newInstance(flags, type, cookie, offset, length,
                        in.readRetainedSlice((int) length), false).reservedIn(budget));
                    return;
                }
                state = State.AWAIT_BUFFER;
                // fall through
            case AWAIT_BUFFER:
                if (!allocatePayload(ctx)) {
                    return;
                }
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
                out.add(NbdRequest.newInstance(flags, type, cookie, offset, length, complete, false)
                    .reservedIn(budget));
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
     * Reserves the payload's bytes and allocates its buffer, moving to {@link State#READ_PAYLOAD}; or stops the
     * channel reading and returns {@code false}, to be resumed by {@link #wake}.
     */
    private boolean allocatePayload(final ChannelHandlerContext ctx) {
        if (!budget.reserveOrWait(length, wake)) {
            ctx.channel().config().setAutoRead(false);
            return false;
        }
        // The budget allowed it, but other users of direct memory (or a budget set above the JVM's limit) may
        // have left too little. Look first: the JVM's own answer to a full limit is a System.gc() and half a
        // second of sleeping on this event loop before the OutOfMemoryError.
        String shortage = DirectMemory.hasRoomFor(length) ? null : DirectMemory.describe();
        if (shortage == null) {
            try {
                payload = ctx.alloc().directBuffer((int) length, (int) length);
            } catch (final OutOfMemoryError e) {
                shortage = e.getMessage();
            }
        }
        if (shortage != null) {
            // Nothing was allocated: wait a little and try again.
            budget.release(length);
            ctx.channel().config().setAutoRead(false);
            if (!warned) {
                warned = true;
                LOG.warn("no direct memory for a {}-byte WRITE payload ({}); the connection waits, retrying every {}"
                    + " ms. Lower nbd.maxBufferedBytes or raise -XX:MaxDirectMemorySize", length, shortage,
                    OUT_OF_MEMORY_RETRY_MILLIS);
            }
            ctx.executor().schedule(this::resume, OUT_OF_MEMORY_RETRY_MILLIS, TimeUnit.MILLISECONDS);
            return false;
        }
        state = State.READ_PAYLOAD;
        return true;
    }

    /** Run by the budget, on whichever thread released bytes. */
    private void wake() {
        final ChannelHandlerContext c = ctx;
        if (c != null) {
            try {
                c.executor().execute(this::resume);
            } catch (final RejectedExecutionException e) {
                // The event loop is shutting down; the connection is going with it.
            }
        }
    }

    /** On the event loop: a waiting payload tries again, and what arrived before reading stopped is decoded. */
    private void resume() {
        final ChannelHandlerContext c = ctx;
        if (state != State.AWAIT_BUFFER || c == null || c.isRemoved() || !allocatePayload(c)) {
            return;
        }
        try {
            channelRead(c, Unpooled.EMPTY_BUFFER);
        } catch (final Exception e) {
            c.fireExceptionCaught(e);
        }
        // Reading was stopped here; the handler behind may stop it again for its own reasons.
        c.channel().config().setAutoRead(true);
        c.fireUserEventTriggered(BUFFER_AVAILABLE);
    }

    /**
     * As {@link ByteToMessageDecoder}'s, which asks for one more read when a read decoded nothing and the channel
     * does not read by itself, so that a request split across reads completes. While a payload waits for the
     * budget that would pile its bytes up in the cumulation, which is what waiting is for, so it does not ask then.
     */
    @Override
    public void channelReadComplete(final ChannelHandlerContext ctx) {
        discardSomeReadBytes();
        final boolean decodedSome = decoded != decodedAtReadComplete;
        decodedAtReadComplete = decoded;
        if (!decodedSome && state != State.AWAIT_BUFFER && !ctx.channel().config().isAutoRead()) {
            ctx.read();
        }
        ctx.fireChannelReadComplete();
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
        this.ctx = ctx;
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
        budget.forget(wake);
        final ByteBuf p = payload;
        payload = null;
        if (p != null) {
            p.release();
            budget.release(length);
        }
        this.ctx = null;
    }
}
