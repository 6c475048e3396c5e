package io.nbdtail.nbd.protocol;

import io.netty.buffer.ByteBuf;
import io.netty.util.Recycler;
import io.netty.util.ReferenceCountUtil;

/**
 * One transmission-phase request as it came off the wire.
 *
 * <pre>
 *   0                   1                   2                   3
 *   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  |                      magic 0x25609513                         |  0
 *  +-------------------------------+-------------------------------+
 *  |        command flags          |             type              |  4
 *  +-------------------------------+-------------------------------+
 *  |                      cookie (8 bytes)                         |  8
 *  +---------------------------------------------------------------+
 *  |                      offset (8 bytes, unsigned)               | 16
 *  +---------------------------------------------------------------+
 *  |                      length (4 bytes, unsigned)               | 24
 *  +---------------------------------------------------------------+
 *  |                      payload (WRITE only, length bytes)       | 28
 * </pre>
 *
 * <p>A WRITE carries its payload as a retained slice of the decoder's buffer: whoever consumes the request owns
 * that reference and must {@link #release()} it. A WRITE longer than the server accepts arrives with
 * {@link #payloadDropped()} set and no payload: the decoder has skipped (not buffered) its bytes.
 *
 * <p>Requests made by {@link #newInstance} come from a pool: the consumer calls {@link #recycle()} once it is
 * completely done with one (on the same event loop), and must not touch it afterwards. Requests made with the
 * constructor are not pooled; {@code recycle()} then only releases the payload.
 */
public final class NbdRequest {
    public static final int MAGIC_OFFSET = 0;
    public static final int FLAGS_OFFSET = 4;
    public static final int TYPE_OFFSET = 6;
    public static final int COOKIE_OFFSET = 8;
    public static final int OFFSET_OFFSET = 16;
    public static final int LENGTH_OFFSET = 24;

    private static final Recycler<NbdRequest> RECYCLER = new Recycler<>() {
        @Override
        protected NbdRequest newObject(final Handle<NbdRequest> handle) {
            return new NbdRequest(handle);
        }
    };

    private final Recycler.Handle<NbdRequest> handle;
    private int flags;
    private int type;
    private long cookie;
    private long offset;
    private long length;
    private ByteBuf payload;
    private boolean payloadDropped;
    /** Holds {@code length} bytes for the payload's buffer until the payload is released; may be null. */
    private Reservation reservation;

    private NbdRequest(final Recycler.Handle<NbdRequest> handle) {
        this.handle = handle;
    }

    public NbdRequest(final int flags, final int type, final long cookie, final long offset, final long length,
                      final ByteBuf payload, final boolean payloadDropped) {
        this.handle = null;
        set(flags, type, cookie, offset, length, payload, payloadDropped);
    }

    /** A pooled request; see {@link #recycle()}. */
    public static NbdRequest newInstance(final int flags, final int type, final long cookie, final long offset,
                                         final long length, final ByteBuf payload, final boolean payloadDropped) {
        final NbdRequest request = RECYCLER.get();
        request.set(flags, type, cookie, offset, length, payload, payloadDropped);
        return request;
    }

    private void set(final int flags, final int type, final long cookie, final long offset, final long length,
                     final ByteBuf payload, final boolean payloadDropped) {
        this.flags = flags;
        this.type = type;
        this.cookie = cookie;
        this.offset = offset;
        this.length = length;
        this.payload = payload;
        this.payloadDropped = payloadDropped;
        this.reservation = null;
    }

    /**
     * The bytes a payload's buffer holds in a server-wide budget; returned when the payload is released.
     */
    public interface Reservation {
        void release(long bytes);
    }

    /** Makes this request return {@code length} bytes to {@code r} when its payload is released. */
    public NbdRequest reservedIn(final Reservation r) {
        this.reservation = r;
        return this;
    }

    /** Releases the payload, if still owned, and returns a pooled request to its pool. */
    public void recycle() {
        release();
        if (handle != null) {
            handle.recycle(this);
        }
    }

    /** Command flags, 16 bits. */
    public int flags() {
        return flags;
    }

    public boolean hasFlag(final int flag) {
        return (flags & flag) != 0;
    }

    /** The raw command type, 16 bits; see {@link #command()}. */
    public int type() {
        return type;
    }

    public NbdCommand command() {
        return NbdCommand.valueOf(type);
    }

    public long cookie() {
        return cookie;
    }

    /** The offset as sent: an unsigned 64-bit value, so compare it with {@link Long#compareUnsigned}. */
    public long offset() {
        return offset;
    }

    /** The length as sent: an unsigned 32-bit value. */
    public long length() {
        return length;
    }

    /** The WRITE payload, or {@code null}. Owned by the request until {@link #takePayload()} or release. */
    public ByteBuf payload() {
        return payload;
    }

    /**
     * Hands the payload reference over to the caller; the request no longer releases it, and no longer counts
     * it in its budget.
     */
    public ByteBuf takePayload() {
        final ByteBuf p = payload;
        payload = null;
        returnReservation();
        return p;
    }

    /** {@code true} for a WRITE whose payload exceeded the limit and was skipped by the decoder. */
    public boolean payloadDropped() {
        return payloadDropped;
    }

    /** Releases the payload if the request still owns it. Safe to call more than once. */
    public void release() {
        final ByteBuf p = payload;
        payload = null;
        ReferenceCountUtil.release(p);
        returnReservation();
    }

    private void returnReservation() {
        final Reservation r = reservation;
        reservation = null;
        if (r != null) {
            r.release(length);
        }
    }

    @Override
    public String toString() {
        return "NbdRequest{" + command() + "(" + type + "), flags=0x" + Integer.toHexString(flags) + ", cookie="
            + cookie + ", offset=" + Long.toUnsignedString(offset) + ", length=" + length + '}';
    }
}
