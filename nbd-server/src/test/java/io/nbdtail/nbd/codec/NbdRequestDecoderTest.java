package io.nbdtail.nbd.codec;

import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.protocol.NbdProtocolException;
import io.nbdtail.nbd.protocol.NbdRequest;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.handler.codec.DecoderException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

class NbdRequestDecoderTest {
    private static final int MAX_PAYLOAD = 32 << 20;
    private static final long MAX_DISCARD = 128L << 20;

    /** READ, flags 0, cookie 0x0102030405060708, offset 4096, length 512. */
    private static final byte[] READ_REQUEST = {
        0x25, 0x60, (byte) 0x95, 0x13,              // magic
        0x00, 0x00,                                 // flags
        0x00, 0x00,                                 // type READ
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // cookie
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, // offset 4096
        0x00, 0x00, 0x02, 0x00,                     // length 512
    };

    /** WRITE with FUA, cookie 42, offset 0x10000, length 16, followed by its 16-byte payload 0x00..0x0f. */
    private static final byte[] WRITE_REQUEST = {
        0x25, 0x60, (byte) 0x95, 0x13,              // magic
        0x00, 0x01,                                 // flags FUA
        0x00, 0x01,                                 // type WRITE
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, // cookie 42
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, // offset 65536
        0x00, 0x00, 0x00, 0x10,                     // length 16
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, // payload
        0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    };

    private EmbeddedChannel channel;
    private ExceptionCatcher catcher;

    @BeforeEach
    void setUp() {
        catcher = new ExceptionCatcher();
        channel = new EmbeddedChannel(new NbdRequestDecoder(MAX_PAYLOAD, MAX_DISCARD), catcher);
    }

    @AfterEach
    void tearDown() {
        releaseAll(catcher.requests);
        channel.finishAndReleaseAll();
    }

    @Test
    void shouldDecodeReadRequest() {
        assertThat(channel.writeInbound(Unpooled.wrappedBuffer(READ_REQUEST))).isFalse();

        final NbdRequest request = catcher.poll();
        assertThat(request.command()).isEqualTo(NbdCommand.READ);
        assertThat(request.type()).isEqualTo(0);
        assertThat(request.flags()).isZero();
        assertThat(request.cookie()).isEqualTo(0x0102030405060708L);
        assertThat(request.offset()).isEqualTo(4096);
        assertThat(request.length()).isEqualTo(512);
        assertThat(request.payload()).isNull();
        assertThat(request.payloadDropped()).isFalse();
        assertThat(catcher.requests).isEmpty();
    }

    @Test
    void shouldDecodeWriteRequestWithPayload() {
        channel.writeInbound(Unpooled.wrappedBuffer(WRITE_REQUEST));

        final NbdRequest request = catcher.poll();
        try {
            assertThat(request.command()).isEqualTo(NbdCommand.WRITE);
            assertThat(request.flags()).isEqualTo(NbdConstants.CMD_FLAG_FUA);
            assertThat(request.hasFlag(NbdConstants.CMD_FLAG_FUA)).isTrue();
            assertThat(request.cookie()).isEqualTo(42);
            assertThat(request.offset()).isEqualTo(65536);
            assertThat(request.length()).isEqualTo(16);
            assertThat(request.payloadDropped()).isFalse();
            assertThat(ByteBufUtil.getBytes(request.payload())).isEqualTo(payloadOf(WRITE_REQUEST));
        } finally {
            request.release();
        }
        assertThat(catcher.requests).isEmpty();
    }

    @Test
    void shouldHandPayloadAsSliceThatIsReleasedWithTheRequest() {
        final ByteBuf in = channel.alloc().buffer(WRITE_REQUEST.length).writeBytes(WRITE_REQUEST);
        in.retain(); // keep our own reference so that we can watch the count

        channel.writeInbound(in);
        final NbdRequest request = catcher.poll();
        final ByteBuf payload = request.payload();

        // The decoder released its reference; the slice holds one more on the same memory.
        assertThat(in.refCnt()).isEqualTo(2);
        assertThat(payload.refCnt()).isPositive();
        // No copy: a change in the input shows through the payload.
        in.setByte(NbdConstants.REQUEST_LENGTH, 0x7f);
        assertThat(payload.getByte(0)).isEqualTo((byte) 0x7f);

        request.release();
        assertThat(in.refCnt()).isEqualTo(1);
        assertThat(request.payload()).isNull();
        request.release(); // safe to call twice
        assertThat(in.refCnt()).isEqualTo(1);
        in.release();
    }

    @Test
    void shouldHandOverPayloadWithTakePayload() {
        channel.writeInbound(Unpooled.wrappedBuffer(WRITE_REQUEST));
        final NbdRequest request = catcher.poll();

        final ByteBuf payload = request.takePayload();
        assertThat(request.payload()).isNull();
        request.release(); // no longer owns it
        assertThat(payload.refCnt()).isEqualTo(1);
        payload.release();
    }

    @Test
    void shouldDecodeTwoRequestsInOneBuffer() {
        channel.writeInbound(Unpooled.wrappedBuffer(concat(WRITE_REQUEST, READ_REQUEST)));

        final NbdRequest write = catcher.poll();
        final NbdRequest read = catcher.poll();
        try {
            assertThat(write.command()).isEqualTo(NbdCommand.WRITE);
            assertThat(ByteBufUtil.getBytes(write.payload())).isEqualTo(payloadOf(WRITE_REQUEST));
            assertThat(read.command()).isEqualTo(NbdCommand.READ);
            assertThat(read.cookie()).isEqualTo(0x0102030405060708L);
        } finally {
            write.release();
        }
        assertThat(catcher.requests).isEmpty();
    }

    @Test
    void shouldDecodeReadSplitAtEveryByte() {
        for (int split = 0; split <= READ_REQUEST.length; split++) {
            final ExceptionCatcher c = new ExceptionCatcher();
            final EmbeddedChannel ch = new EmbeddedChannel(new NbdRequestDecoder(MAX_PAYLOAD, MAX_DISCARD), c);
            try {
                ch.writeInbound(Unpooled.wrappedBuffer(READ_REQUEST, 0, split));
                if (split < READ_REQUEST.length) {
                    assertThat(c.requests).as("split at %d", split).isEmpty();
                }
                ch.writeInbound(Unpooled.wrappedBuffer(READ_REQUEST, split, READ_REQUEST.length - split));

                assertThat(c.requests).as("split at %d", split).hasSize(1);
                final NbdRequest r = c.requests.getFirst();
                assertThat(r.command()).isEqualTo(NbdCommand.READ);
                assertThat(r.cookie()).isEqualTo(0x0102030405060708L);
                assertThat(r.offset()).isEqualTo(4096);
                assertThat(r.length()).isEqualTo(512);
            } finally {
                releaseAll(c.requests);
                ch.finishAndReleaseAll();
            }
        }
    }

    @Test
    void shouldDecodeWriteSplitAtEveryByte() {
        for (int split = 0; split <= WRITE_REQUEST.length; split++) {
            final ExceptionCatcher c = new ExceptionCatcher();
            final EmbeddedChannel ch = new EmbeddedChannel(new NbdRequestDecoder(MAX_PAYLOAD, MAX_DISCARD), c);
            try {
                ch.writeInbound(Unpooled.wrappedBuffer(WRITE_REQUEST, 0, split));
                if (split < WRITE_REQUEST.length) {
                    assertThat(c.requests).as("split at %d", split).isEmpty();
                }
                ch.writeInbound(Unpooled.wrappedBuffer(WRITE_REQUEST, split, WRITE_REQUEST.length - split));

                assertThat(c.requests).as("split at %d", split).hasSize(1);
                final NbdRequest r = c.requests.getFirst();
                assertThat(r.command()).isEqualTo(NbdCommand.WRITE);
                assertThat(r.cookie()).isEqualTo(42);
                assertThat(ByteBufUtil.getBytes(r.payload())).isEqualTo(payloadOf(WRITE_REQUEST));
            } finally {
                releaseAll(c.requests);
                ch.finishAndReleaseAll();
            }
        }
    }

    @Test
    void shouldDecodeEveryByteFedSeparately() {
        final byte[] stream = concat(READ_REQUEST, WRITE_REQUEST, READ_REQUEST);
        for (final byte b : stream) {
            channel.writeInbound(Unpooled.wrappedBuffer(new byte[] {b}));
        }
        assertThat(catcher.requests).extracting(NbdRequest::command)
            .containsExactly(NbdCommand.READ, NbdCommand.WRITE, NbdCommand.READ);
        assertThat(ByteBufUtil.getBytes(catcher.requests.get(1).payload())).isEqualTo(payloadOf(WRITE_REQUEST));
    }

    @Test
    void shouldCollectWritePayloadSplitAcrossManyReads() {
        final int length = 1 << 20;
        final byte[] payload = new byte[length];
        for (int i = 0; i < length; i++) {
            payload[i] = (byte) (i * 31 + 7);
        }
        channel.writeInbound(Unpooled.wrappedBuffer(header(0, NbdCommand.WRITE.type(), 7, 0, length)));
        int sent = 0;
        int chunk = 1;
        while (sent < length) {
            final int n = Math.min(chunk, length - sent);
            assertThat(catcher.requests).isEmpty();
            channel.writeInbound(Unpooled.wrappedBuffer(payload, sent, n));
            sent += n;
            chunk = chunk * 3 + 1; // 1, 4, 13, ... a mix of small and large reads
        }

        final NbdRequest request = catcher.poll();
        try {
            assertThat(request.length()).isEqualTo(length);
            assertThat(ByteBufUtil.getBytes(request.payload())).isEqualTo(payload);
        } finally {
            request.release();
        }
    }

    @Test
    void shouldGatherSplitPayloadIntoOneBufferOfItsLengthAndFreeTheInput() {
        final ByteBuf first = channel.alloc().buffer().writeBytes(WRITE_REQUEST, 0, NbdConstants.REQUEST_LENGTH + 5);
        final ByteBuf second = channel.alloc().buffer()
            .writeBytes(WRITE_REQUEST, NbdConstants.REQUEST_LENGTH + 5, 11);
        first.retain();
        second.retain();

        channel.writeInbound(first);
        channel.writeInbound(second);
        final NbdRequest request = catcher.poll();
        try {
            // The socket buffers are free as soon as their bytes are copied: the payload holds neither.
            assertThat(first.refCnt()).isEqualTo(1);
            assertThat(second.refCnt()).isEqualTo(1);
            assertThat(request.payload().capacity()).isEqualTo(16);
            assertThat(request.payload().isDirect()).isTrue();
            assertThat(ByteBufUtil.getBytes(request.payload())).isEqualTo(payloadOf(WRITE_REQUEST));
        } finally {
            request.release();
            first.release();
            second.release();
        }
    }

    @Test
    void shouldLetTheSocketReadTheRestOfALargePayloadStraightIntoIt() {
        final int length = 1 << 20;
        final byte[] payload = new byte[length];
        for (int i = 0; i < length; i++) {
            payload[i] = (byte) (i * 13 + 1);
        }
        final PayloadRecvByteBufAllocator recv = new PayloadRecvByteBufAllocator(
            new io.netty.channel.AdaptiveRecvByteBufAllocator());
        final ExceptionCatcher c = new ExceptionCatcher();
        final EmbeddedChannel ch = new EmbeddedChannel();
        ch.config().setRecvByteBufAllocator(recv);
        ch.config().setAllocator(io.netty.buffer.PooledByteBufAllocator.DEFAULT);
        ch.pipeline().addLast(new NbdRequestDecoder(MAX_PAYLOAD, MAX_DISCARD), c);
        final io.netty.channel.RecvByteBufAllocator.Handle handle = recv.newHandle();
        try {
            // The header and the first 1000 bytes arrive in an ordinary buffer.
            final ByteBuf first = ch.alloc().directBuffer();
            first.writeBytes(header(0, NbdCommand.WRITE.type(), 9, 0, length)).writeBytes(payload, 0, 1000);
            ch.writeInbound(first);
            // What the socket would read next: the missing part of the payload, and not one byte more.
            final ByteBuf target = handle.allocate(ch.alloc());
            assertThat(target.writableBytes()).isEqualTo(length - 1000);
            assertThat(target.maxWritableBytes()).isEqualTo(length - 1000);
            final long at = target.memoryAddress();
            target.writeBytes(payload, 1000, 300_000);
            ch.writeInbound(target); // consumed and released by the decoder, like any receive buffer
            final ByteBuf second = handle.allocate(ch.alloc());
            assertThat(second.memoryAddress()).isEqualTo(at + 300_000);
            second.writeBytes(payload, 301_000, length - 301_000);
            ch.writeInbound(second);

            final NbdRequest r = c.poll();
            assertThat(ByteBufUtil.getBytes(r.payload())).isEqualTo(payload);
            assertThat(r.payload().memoryAddress()).isEqualTo(at - 1000);
            r.release();
            // Between requests the socket gets an ordinary buffer again.
            final ByteBuf normal = handle.allocate(ch.alloc());
            assertThat(normal.maxCapacity()).isGreaterThan(length);
            normal.release();
        } finally {
            releaseAll(c.requests);
            ch.finishAndReleaseAll();
        }
    }

    @Test
    void shouldReleasePartlyGatheredPayloadWhenTheConnectionCloses() {
        channel.writeInbound(Unpooled.wrappedBuffer(WRITE_REQUEST, 0, NbdConstants.REQUEST_LENGTH + 3));
        assertThat(catcher.requests).isEmpty();

        // The paranoid leak detector (LeakCheckExtension) fails the class if the gathered payload leaks here.
        channel.close();
        assertThat(channel.finishAndReleaseAll()).isFalse();
        assertThat(catcher.requests).isEmpty();
    }

    @Test
    void shouldCloseOnBadMagicAndIgnoreLaterBytes() {
        final byte[] bad = READ_REQUEST.clone();
        bad[3] = 0x14; // 0x25609514: the reserved transaction-log magic, not a request
        // A valid request after the bad one, in the same buffer: it must not be decoded.
        channel.writeInbound(Unpooled.wrappedBuffer(concat(bad, READ_REQUEST)));

        assertThat(catcher.requests).isEmpty();
        assertThat(catcher.cause).isInstanceOf(DecoderException.class)
            .hasCauseInstanceOf(NbdProtocolException.class);
        assertThat(catcher.cause.getCause()).hasMessageContaining("25609514");
        assertThat(channel.isOpen()).isFalse();
    }

    @Test
    void shouldSurfaceBadMagicThroughPipelineAndStayBrokenAfterwards() {
        // Without a handler that closes: the exception reaches the tail and the decoder stays broken.
        final EmbeddedChannel ch = new EmbeddedChannel(new NbdRequestDecoder(MAX_PAYLOAD, MAX_DISCARD));
        try {
            final byte[] bad = READ_REQUEST.clone();
            bad[0] = 0;
            assertThatThrownBy(() -> ch.writeInbound(Unpooled.wrappedBuffer(bad)))
                .isInstanceOf(DecoderException.class)
                .hasCauseInstanceOf(NbdProtocolException.class);

            assertThat(ch.writeInbound(Unpooled.wrappedBuffer(READ_REQUEST))).isFalse();
            assertThat(ch.writeInbound(Unpooled.wrappedBuffer(WRITE_REQUEST))).isFalse();
            assertThat((Object) ch.readInbound()).isNull();
            ch.checkException();
        } finally {
            ch.finishAndReleaseAll();
        }
    }

    @Test
    void shouldSkipPayloadOfWriteAboveMaxPayloadAndDecodeTheNextRequest() {
        final long length = MAX_PAYLOAD + 1L;
        channel.writeInbound(Unpooled.wrappedBuffer(header(0, NbdCommand.WRITE.type(), 9, 8192, length)));

        // Emitted at once, before any payload byte arrived.
        final NbdRequest dropped = catcher.poll();
        assertThat(dropped.command()).isEqualTo(NbdCommand.WRITE);
        assertThat(dropped.cookie()).isEqualTo(9);
        assertThat(dropped.length()).isEqualTo(length);
        assertThat(dropped.payloadDropped()).isTrue();
        assertThat(dropped.payload()).isNull();

        // Payload bytes that look like requests must be skipped, not decoded.
        final byte[] chunk = new byte[1 << 20];
        for (int i = 0; i + READ_REQUEST.length <= chunk.length; i += READ_REQUEST.length) {
            System.arraycopy(READ_REQUEST, 0, chunk, i, READ_REQUEST.length);
        }
        long remaining = length;
        while (remaining > 1) {
            final int n = (int) Math.min(chunk.length, remaining - 1);
            channel.writeInbound(Unpooled.wrappedBuffer(chunk, 0, n));
            remaining -= n;
        }
        assertThat(catcher.requests).isEmpty();
        // The last payload byte and the next request in one buffer.
        channel.writeInbound(Unpooled.wrappedBuffer(concat(new byte[] {1}, READ_REQUEST)));

        final NbdRequest next = catcher.poll();
        assertThat(next.command()).isEqualTo(NbdCommand.READ);
        assertThat(next.cookie()).isEqualTo(0x0102030405060708L);
        assertThat(catcher.requests).isEmpty();
        assertThat(catcher.cause).isNull();
        assertThat(channel.isOpen()).isTrue();
    }

    @Test
    void shouldAcceptWriteOfExactlyMaxPayload() {
        final ByteBuf in = Unpooled.buffer(NbdConstants.REQUEST_LENGTH + MAX_PAYLOAD);
        in.writeBytes(header(0, NbdCommand.WRITE.type(), 1, 0, MAX_PAYLOAD));
        in.writerIndex(in.writerIndex() + MAX_PAYLOAD);
        channel.writeInbound(in);

        final NbdRequest request = catcher.poll();
        try {
            assertThat(request.payloadDropped()).isFalse();
            assertThat(request.payload().readableBytes()).isEqualTo(MAX_PAYLOAD);
        } finally {
            request.release();
        }
    }

    @Test
    void shouldEmitDroppedWriteOfExactlyMaxDiscard() {
        channel.writeInbound(Unpooled.wrappedBuffer(header(0, NbdCommand.WRITE.type(), 3, 0, MAX_DISCARD)));

        final NbdRequest request = catcher.poll();
        assertThat(request.payloadDropped()).isTrue();
        assertThat(request.length()).isEqualTo(MAX_DISCARD);
        assertThat(channel.isOpen()).isTrue();
    }

    @Test
    void shouldCloseWhenWriteIsLongerThanMaxDiscard() {
        channel.writeInbound(Unpooled.wrappedBuffer(concat(
            header(0, NbdCommand.WRITE.type(), 3, 0, MAX_DISCARD + 1), READ_REQUEST)));

        assertThat(catcher.requests).isEmpty();
        assertThat(catcher.cause).hasCauseInstanceOf(NbdProtocolException.class);
        assertThat(channel.isOpen()).isFalse();
    }

    @Test
    void shouldCloseWhenWriteLengthIsTheLargestU32() {
        channel.writeInbound(Unpooled.wrappedBuffer(header(0, NbdCommand.WRITE.type(), 3, 0, 0xFFFFFFFFL)));

        assertThat(catcher.requests).isEmpty();
        assertThat(catcher.cause).hasCauseInstanceOf(NbdProtocolException.class);
        assertThat(channel.isOpen()).isFalse();
    }

    @Test
    void shouldDecodeZeroLengthWriteWithoutPayload() {
        channel.writeInbound(Unpooled.wrappedBuffer(concat(header(0, NbdCommand.WRITE.type(), 5, 0, 0),
            READ_REQUEST)));

        final NbdRequest write = catcher.poll();
        assertThat(write.command()).isEqualTo(NbdCommand.WRITE);
        assertThat(write.length()).isZero();
        assertThat(write.payload()).isNull();
        assertThat(write.payloadDropped()).isFalse();
        assertThat(catcher.poll().command()).isEqualTo(NbdCommand.READ);
    }

    @Test
    void shouldNotExpectPayloadForCommandsOtherThanWrite() {
        // A TRIM and a WRITE_ZEROES of 1 GiB carry no payload: the next header follows at once.
        channel.writeInbound(Unpooled.wrappedBuffer(concat(
            header(0, NbdCommand.TRIM.type(), 1, 0, 1 << 30),
            header(NbdConstants.CMD_FLAG_NO_HOLE, NbdCommand.WRITE_ZEROES.type(), 2, 0, 1 << 30),
            READ_REQUEST)));

        assertThat(catcher.requests).extracting(NbdRequest::command)
            .containsExactly(NbdCommand.TRIM, NbdCommand.WRITE_ZEROES, NbdCommand.READ);
        assertThat(catcher.requests.get(1).hasFlag(NbdConstants.CMD_FLAG_NO_HOLE)).isTrue();
    }

    @Test
    void shouldKeepUnknownTypesAndAllSixteenFlagBits() {
        channel.writeInbound(Unpooled.wrappedBuffer(header(0xFFFF, 0xFFFF, -1L, 0, 0xFFFFFFFFL)));

        final NbdRequest request = catcher.poll();
        assertThat(request.flags()).isEqualTo(0xFFFF);
        assertThat(request.type()).isEqualTo(0xFFFF);
        assertThat(request.command()).isEqualTo(NbdCommand.UNKNOWN);
        assertThat(request.cookie()).isEqualTo(-1L);
        assertThat(request.length()).isEqualTo(0xFFFFFFFFL);
    }

    @Test
    void shouldKeepOffsetWithTopBitSetAsUnsigned() {
        // offset 0xFFFFFFFFFFFFF000 = 2^64 - 4096
        channel.writeInbound(Unpooled.wrappedBuffer(header(0, NbdCommand.READ.type(), 1, 0xFFFFFFFFFFFFF000L, 4096)));

        final NbdRequest request = catcher.poll();
        assertThat(Long.toUnsignedString(request.offset())).isEqualTo("18446744073709547520");
        assertThat(Long.compareUnsigned(request.offset(), Long.MAX_VALUE)).isPositive();
        assertThat(request.toString()).contains("offset=18446744073709547520");
    }

    @Test
    void shouldRejectInconsistentLimits() {
        assertThatThrownBy(() -> new NbdRequestDecoder(0, 10)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> new NbdRequestDecoder(10, 9)).isInstanceOf(IllegalArgumentException.class);
    }

    // ---------------------------------------------------------------- helpers

    /** A request header as the client sends it. */
    @Test
    void aPayloadThatDoesNotFitTheBudgetWaitsWithReadingStoppedAndResumesWhenAnotherIsReleased() {
        final BufferBudget budget = new BufferBudget(1 << 20);
        final ExceptionCatcher firstCatcher = new ExceptionCatcher();
        final ExceptionCatcher secondCatcher = new ExceptionCatcher();
        final EmbeddedChannel first = new EmbeddedChannel(new NbdRequestDecoder(MAX_PAYLOAD, MAX_DISCARD, budget, true),
            firstCatcher);
        final EmbeddedChannel second = new EmbeddedChannel(new NbdRequestDecoder(MAX_PAYLOAD, MAX_DISCARD, budget, true),
            secondCatcher);
        try {
            final byte[] a = pattern(600 << 10, 1);
            final byte[] b = pattern(700 << 10, 2);
            first.writeInbound(Unpooled.wrappedBuffer(concat(header(0, 1, 1, 0, a.length), slice(a, 0, 1000))));
            assertThat(budget.used()).isEqualTo(a.length);

            second.writeInbound(Unpooled.wrappedBuffer(concat(header(0, 1, 2, 0, b.length), slice(b, 0, 3000))));
            final NbdRequestDecoder waiting = second.pipeline().get(NbdRequestDecoder.class);
            assertThat(waiting.awaitingBuffer()).isTrue();
            assertThat(waiting.midRequest()).isTrue();
            assertThat(second.config().isAutoRead()).isFalse();
            assertThat(budget.used()).isEqualTo(a.length);
            assertThat(budget.waits()).isEqualTo(1);

            first.writeInbound(Unpooled.wrappedBuffer(slice(a, 1000, a.length)));
            final NbdRequest done = firstCatcher.poll();
            assertThat(ByteBufUtil.getBytes(done.payload())).isEqualTo(a);
            second.runPendingTasks();
            assertThat(waiting.awaitingBuffer()).isTrue(); // nothing released yet
            done.recycle();
            assertThat(budget.used()).isZero();

            second.runPendingTasks(); // the wake-up runs on the channel's event loop
            assertThat(waiting.awaitingBuffer()).isFalse();
            assertThat(second.config().isAutoRead()).isTrue();
            assertThat(budget.used()).isEqualTo(b.length);
            second.writeInbound(Unpooled.wrappedBuffer(slice(b, 3000, b.length)));
            final NbdRequest resumed = secondCatcher.poll();
            assertThat(resumed.cookie()).isEqualTo(2);
            assertThat(ByteBufUtil.getBytes(resumed.payload())).isEqualTo(b);
            resumed.recycle();
            assertThat(budget.used()).isZero();
            assertThat(firstCatcher.cause).isNull();
            assertThat(secondCatcher.cause).isNull();
        } finally {
            releaseAll(firstCatcher.requests);
            releaseAll(secondCatcher.requests);
            first.finishAndReleaseAll();
            second.finishAndReleaseAll();
        }
    }

    @Test
    void everyPayloadIsCountedUntilReleasedAndAClosedConnectionGivesBackWhatItHeld() {
        final BufferBudget budget = new BufferBudget(64 << 20);
        final ExceptionCatcher c = new ExceptionCatcher();
        final EmbeddedChannel ch = new EmbeddedChannel(new NbdRequestDecoder(MAX_PAYLOAD, MAX_DISCARD, budget, true), c);
        // In one buffer with its header: a slice of the input, counted all the same.
        ch.writeInbound(Unpooled.wrappedBuffer(WRITE_REQUEST));
        assertThat(budget.used()).isEqualTo(16);
        c.poll().recycle();
        assertThat(budget.used()).isZero();
        // Half a payload when the connection closes.
        ch.writeInbound(Unpooled.wrappedBuffer(concat(header(0, 1, 3, 0, 1 << 20), new byte[100])));
        assertThat(budget.used()).isEqualTo(1 << 20);
        ch.finishAndReleaseAll();
        assertThat(budget.used()).isZero();
    }

    @Test
    void aWaitingConnectionThatClosesIsForgotten() {
        final BufferBudget budget = new BufferBudget(1 << 20);
        budget.reserve(1 << 20);
        final ExceptionCatcher c = new ExceptionCatcher();
        final EmbeddedChannel ch = new EmbeddedChannel(new NbdRequestDecoder(MAX_PAYLOAD, MAX_DISCARD, budget, true), c);
        ch.writeInbound(Unpooled.wrappedBuffer(concat(header(0, 1, 4, 0, 4096), new byte[10])));
        assertThat(ch.pipeline().get(NbdRequestDecoder.class).awaitingBuffer()).isTrue();
        ch.finishAndReleaseAll();
        budget.release(1 << 20);
        assertThat(budget.used()).isZero();
        assertThat(c.requests).isEmpty();
    }

    @Test
    void countsEveryDecodedRequestIncludingWritesWhosePayloadCameWithTheHeader() {
        // The slow-loris timer compares this count between ticks: a stream of small writes must move it, or a busy
        // client with a partial request at every tick would be closed as a slow one.
        final NbdRequestDecoder decoder = channel.pipeline().get(NbdRequestDecoder.class);
        channel.writeInbound(Unpooled.wrappedBuffer(concat(WRITE_REQUEST, WRITE_REQUEST, READ_REQUEST)));
        assertThat(decoder.decoded()).isEqualTo(3);
        releaseAll(catcher.requests);
    }

    private static byte[] pattern(final int length, final int seed) {
        final byte[] bytes = new byte[length];
        for (int i = 0; i < length; i++) {
            bytes[i] = (byte) (i * 31 + seed);
        }
        return bytes;
    }

    private static byte[] slice(final byte[] bytes, final int from, final int to) {
        return Arrays.copyOfRange(bytes, from, to);
    }

    static byte[] header(final int flags, final int type, final long cookie, final long offset, final long length) {
        final ByteBuf buf = Unpooled.buffer(NbdConstants.REQUEST_LENGTH);
        buf.writeInt(NbdConstants.REQUEST_MAGIC);
        buf.writeShort(flags);
        buf.writeShort(type);
        buf.writeLong(cookie);
        buf.writeLong(offset);
        buf.writeInt((int) length);
        final byte[] bytes = ByteBufUtil.getBytes(buf);
        buf.release();
        return bytes;
    }

    private static byte[] payloadOf(final byte[] writeRequest) {
        return Arrays.copyOfRange(writeRequest, NbdConstants.REQUEST_LENGTH, writeRequest.length);
    }

    private static byte[] concat(final byte[]... parts) {
        int n = 0;
        for (final byte[] p : parts) {
            n += p.length;
        }
        final byte[] all = new byte[n];
        int at = 0;
        for (final byte[] p : parts) {
            System.arraycopy(p, 0, all, at, p.length);
            at += p.length;
        }
        return all;
    }

    private static void releaseAll(final List<NbdRequest> requests) {
        for (final NbdRequest r : requests) {
            r.release();
        }
        requests.clear();
    }

    /**
     * Stands in for the transmission handler: collects the decoded requests, and on an exception records it and
     * closes the channel, as the real handler does.
     */
    private static final class ExceptionCatcher extends ChannelInboundHandlerAdapter {
        final List<NbdRequest> requests = new ArrayList<>();
        Throwable cause;

        @Override
        public void channelRead(final ChannelHandlerContext ctx, final Object msg) {
            requests.add((NbdRequest) msg);
        }

        @Override
        public void exceptionCaught(final ChannelHandlerContext ctx, final Throwable t) {
            cause = t;
            ctx.close();
        }

        /** The oldest request not yet taken; it stays owned by the test (release it if it has a payload). */
        NbdRequest poll() {
            assertThat(requests).isNotEmpty();
            return requests.removeFirst();
        }
    }
}
