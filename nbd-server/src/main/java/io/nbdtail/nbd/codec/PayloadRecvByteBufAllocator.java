package io.nbdtail.nbd.codec;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.channel.ChannelConfig;
import io.netty.channel.RecvByteBufAllocator;
import io.netty.util.UncheckedBooleanSupplier;

/**
 * The receive-buffer allocator of one connection: lets the socket read the rest of a large WRITE payload straight
 * into the payload buffer, so its bytes are never copied in user space.
 *
 * <p>Normally each socket read goes into a buffer from {@code delegate} (adaptive, up to 256 KiB), and the
 * decoder copies the payload part out of it. While the {@link NbdRequestDecoder} is gathering a payload of which
 * at least {@link #MIN_DIRECT} bytes are missing, this allocator instead hands the socket a slice of exactly the
 * missing part of the payload buffer. The read cannot overrun into the next request, because the slice ends
 * where the payload does; the decoder recognises its own memory and only moves its write position.
 *
 * <p>One instance per channel (set at channel initialisation, before the first read); the decoder registers
 * itself when it is added to the pipeline. Everything runs on the channel's event loop.
 */
public final class PayloadRecvByteBufAllocator implements RecvByteBufAllocator {
    /** Below this many missing bytes a normal read (which may also carry the next headers) is as good. */
    static final int MIN_DIRECT = 16 << 10;

    private final RecvByteBufAllocator delegate;
    private NbdRequestDecoder decoder;

    public PayloadRecvByteBufAllocator(final RecvByteBufAllocator delegate) {
        this.delegate = delegate;
    }

    void register(final NbdRequestDecoder d) {
        decoder = d;
    }

    void unregister(final NbdRequestDecoder d) {
        if (decoder == d) {
            decoder = null;
        }
    }

    @Override
    public Handle newHandle() {
        return new PayloadHandle((ExtendedHandle) delegate.newHandle());
    }

    private final class PayloadHandle implements ExtendedHandle {
        private final ExtendedHandle handle;

        PayloadHandle(final ExtendedHandle handle) {
            this.handle = handle;
        }

        @Override
        public ByteBuf allocate(final ByteBufAllocator alloc) {
            final NbdRequestDecoder d = decoder;
            if (d != null) {
                final ByteBuf target = d.receiveTarget(MIN_DIRECT);
                if (target != null) {
                    return target;
                }
            }
            return handle.allocate(alloc);
        }

        @Override
        public int guess() {
            return handle.guess();
        }

        @Override
        public void reset(final ChannelConfig config) {
            handle.reset(config);
        }

        @Override
        public void incMessagesRead(final int numMessages) {
            handle.incMessagesRead(numMessages);
        }

        @Override
        public void lastBytesRead(final int bytes) {
            handle.lastBytesRead(bytes);
        }

        @Override
        public int lastBytesRead() {
            return handle.lastBytesRead();
        }

        @Override
        public void attemptedBytesRead(final int bytes) {
            handle.attemptedBytesRead(bytes);
        }

        @Override
        public int attemptedBytesRead() {
            return handle.attemptedBytesRead();
        }

        @Override
        public boolean continueReading() {
            return handle.continueReading();
        }

        @Override
        public boolean continueReading(final UncheckedBooleanSupplier maybeMoreDataSupplier) {
            return handle.continueReading(maybeMoreDataSupplier);
        }

        @Override
        public void readComplete() {
            handle.readComplete();
        }
    }
}
