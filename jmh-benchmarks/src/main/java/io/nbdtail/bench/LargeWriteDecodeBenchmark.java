package io.nbdtail.bench;

import io.nbdtail.nbd.codec.NbdRequestDecoder;
import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.protocol.NbdRequest;
import io.nbdtail.nbd.transport.NbdServer;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
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
 * A large WRITE as the socket delivers it: the 28-byte header and a {@code payload}-byte payload arriving in
 * {@code read}-byte socket reads, each in its own pooled direct buffer of the receive allocator's maximum
 * capacity (256 KiB), as Netty's epoll channel hands them to the decoder. {@code ByteToMessageDecoder}'s default
 * merge cumulator copies every read after the first into the cumulation buffer and grows it (allocate + copy)
 * when it is full, so the payload is copied in user space before {@code pwrite} copies it once more.
 *
 * <p>{@code deliver} is the baseline: the same buffers made and released without decoding (its cost is the
 * copy that stands in for the kernel's). {@code decode} - {@code deliver} is what the decoder adds per request.
 * {@code holdPrevious=true} keeps the previous request's payload alive while the next one arrives, as a WRITE in
 * flight on a storage thread does.
 *
 * <p>{@code allocator=server} is the server's allocator ({@code NbdServer.ALLOCATOR}, 16 MiB chunks),
 * {@code netty} is Netty's default (4 MiB chunks), with which 1 MiB buffers make the arena free and map chunks
 * over and over.
 */
@State(Scope.Thread)
public class LargeWriteDecodeBenchmark extends BenchmarkBase {
    private static final int RECV_BUFFER = 256 << 10;

    @Param({"1048576"})
    int payload;

    @Param({"65536", "262144"})
    int read;

    @Param({"false", "true"})
    boolean holdPrevious;

    @Param({"server", "netty"})
    String allocator;

    private EmbeddedChannel channel;
    private ChannelPipeline pipeline;
    private ByteBuf message;
    private ByteBuf[] reads;
    private NbdRequest previous;
    private ByteBufAllocator alloc;

    @Setup(Level.Trial)
    public void setUp() throws Exception {
        requireFastThreadLocalThread();
        alloc = "server".equals(allocator) ? NbdServer.ALLOCATOR : PooledByteBufAllocator.DEFAULT;
        channel = new EmbeddedChannel(false, false, new NbdRequestDecoder(32 << 20, 128 << 20));
        channel.config().setAllocator(alloc);
        channel.register();
        pipeline = channel.pipeline();
        message = PooledByteBufAllocator.DEFAULT.directBuffer(NbdConstants.REQUEST_LENGTH + payload);
        message.writeInt(NbdConstants.REQUEST_MAGIC);
        message.writeShort(0);
        message.writeShort(NbdCommand.WRITE.type());
        message.writeLong(1);
        message.writeLong(0);
        message.writeInt(payload);
        for (int i = 0; i < payload; i++) {
            message.writeByte(i);
        }
        reads = new ByteBuf[(message.readableBytes() + read - 1) / read];
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        if (previous != null) {
            previous.recycle();
        }
        message.release();
        channel.finishAndReleaseAll();
    }

    /** The socket reads of one request: fresh pooled buffers, filled from the template. */
    private void makeReads() {
        final int total = message.readableBytes();
        for (int i = 0, at = 0; at < total; i++, at += read) {
            final int n = Math.min(read, total - at);
            final ByteBuf b = alloc.directBuffer(RECV_BUFFER);
            b.writeBytes(message, at, n);
            reads[i] = b;
        }
    }

    @Benchmark
    public int deliver() {
        makeReads();
        int n = 0;
        for (final ByteBuf b : reads) {
            n += b.readableBytes();
            b.release();
        }
        return n;
    }

    @Benchmark
    public long decode() {
        makeReads();
        for (final ByteBuf b : reads) {
            pipeline.fireChannelRead(b);
            pipeline.fireChannelReadComplete();
        }
        final NbdRequest decoded = channel.readInbound();
        final long length = decoded.length();
        if (holdPrevious) {
            if (previous != null) {
                previous.recycle();
            }
            previous = decoded;
        } else {
            decoded.recycle();
        }
        return length;
    }
}
