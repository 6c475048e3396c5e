package io.nbdtail.bench;

import io.nbdtail.nbd.codec.NbdRequestDecoder;
import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.protocol.NbdRequest;
import io.nbdtail.nbd.transport.NbdServer;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import io.netty.channel.ChannelPipeline;
import io.netty.channel.embedded.EmbeddedChannel;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Decoding of one transmission request as the event loop sees it: one socket read delivering a 28-byte READ
 * header ({@code payload = 0}) or a WRITE header followed by its payload, then channelReadComplete.
 *
 * <p>The request is fed with {@code pipeline.fireChannelRead} (what the epoll channel does) rather than
 * {@code EmbeddedChannel.writeInbound(Object...)}, whose varargs array would be counted as allocation.
 */
@State(Scope.Thread)
public class RequestDecoderBenchmark extends BenchmarkBase {
    /** WRITE payload bytes; 0 means a READ of 4 KiB (header only). */
    @Param({"0", "4096", "65536"})
    int payload;

    private EmbeddedChannel channel;
    private ChannelPipeline pipeline;
    private ByteBuf request;

    @Setup(Level.Trial)
    public void setUp() throws Exception {
        requireFastThreadLocalThread();
        channel = new EmbeddedChannel(false, false, new NbdRequestDecoder(32 << 20, 128 << 20));
        channel.config().setAllocator(NbdServer.ALLOCATOR);
        channel.register();
        pipeline = channel.pipeline();
        request = PooledByteBufAllocator.DEFAULT.directBuffer(NbdConstants.REQUEST_LENGTH + payload);
        request.writeInt(NbdConstants.REQUEST_MAGIC);
        request.writeShort(0);
        request.writeShort(payload == 0 ? NbdCommand.READ.type() : NbdCommand.WRITE.type());
        request.writeLong(42);
        request.writeLong(1 << 20);
        request.writeInt(payload == 0 ? 4096 : payload);
        request.writeZero(payload);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        request.release();
        channel.finishAndReleaseAll();
    }

    @Benchmark
    public long decode() {
        pipeline.fireChannelRead(request.retainedDuplicate());
        pipeline.fireChannelReadComplete();
        final NbdRequest decoded = channel.readInbound();
        final long cookie = decoded.cookie();
        decoded.recycle();
        return cookie;
    }
}
