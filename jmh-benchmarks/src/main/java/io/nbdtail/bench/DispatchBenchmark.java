package io.nbdtail.bench;

import io.nbdtail.nbd.codec.NbdReplies;
import io.nbdtail.nbd.engine.Export;
import io.nbdtail.nbd.engine.NbdHandshakeHandler;
import io.nbdtail.nbd.engine.NbdServerConfig;
import io.nbdtail.nbd.engine.NbdServerContext;
import io.nbdtail.nbd.engine.NbdTransmissionHandler;
import io.nbdtail.nbd.engine.SimpleExportRegistry;
import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.protocol.NbdRequest;
import io.nbdtail.nbd.transport.NbdServer;
import io.nbdtail.volume.Volume;
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

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * One request through the whole engine, on one thread: an {@link EmbeddedChannel} whose handshake (fixed
 * newstyle, NO_ZEROES, structured replies if asked, GO) has put the decoder and {@link NbdTransmissionHandler}
 * in place, a volume on a page-cache-hot 64 MiB file, and a storage executor that runs the I/O inline. One
 * operation = the request bytes in, the tasks the handler queued on its event loop (completion, flush) run, the
 * reply read out and released.
 *
 * <p>Offsets walk through the file in 4 KiB steps, so every request touches a different page.
 *
 * <p>{@code op}: {@code READ} (no flags, what qemu and libnbd send: with structured replies the server asks the
 * file system for holes first), {@code READ_DF} (DF set: one data chunk, no hole lookup), {@code WRITE}.
 */
@State(Scope.Thread)
public class DispatchBenchmark extends BenchmarkBase {
    private static final long FILE_SIZE = 64L << 20;

    @Param({"READ", "READ_DF", "WRITE"})
    String op;

    @Param({"4096"})
    int size;

    @Param({"true"})
    boolean structured;

    private Path dir;
    private Volume volume;
    private EmbeddedChannel channel;
    private ChannelPipeline pipeline;
    private ByteBuf request;
    private long offset;

    @Setup(Level.Trial)
    public void setUp() throws Exception {
        requireFastThreadLocalThread();
        dir = BenchFiles.tempDir();
        final Path file = BenchFiles.filledFile(dir, "disk.raw", FILE_SIZE);
        volume = BenchFiles.volume(file, "disk", Runnable::run);
        final SimpleExportRegistry registry = new SimpleExportRegistry();
        registry.add(Export.of(volume));
        final NbdServerContext context = new NbdServerContext(new NbdServerConfig().conclude(), registry,
            Runnable::run);

        channel = new EmbeddedChannel(false, false, new NbdHandshakeHandler(context));
        channel.config().setAllocator(NbdServer.ALLOCATOR);
        channel.register();
        pipeline = channel.pipeline();
        handshake();
        if (pipeline.get(NbdTransmissionHandler.class) == null) {
            throw new IllegalStateException("handshake did not reach transmission: " + pipeline.names());
        }

        final boolean write = op.equals("WRITE");
        final int flags = op.equals("READ_DF") ? NbdConstants.CMD_FLAG_DF : 0;
        request = PooledByteBufAllocator.DEFAULT.directBuffer(NbdConstants.REQUEST_LENGTH + (write ? size : 0));
        request.writeInt(NbdConstants.REQUEST_MAGIC);
        request.writeShort(flags);
        request.writeShort(write ? NbdCommand.WRITE.type() : NbdCommand.READ.type());
        request.writeLong(7);
        request.writeLong(0);
        request.writeInt(size);
        for (int i = 0; write && i < size; i++) {
            request.writeByte(i * 13 + 1);
        }
        // The first round trip checks that the reply is a success of the expected length.
        final long n = once();
        final long expected = write ? NbdConstants.SIMPLE_REPLY_LENGTH
            : structured ? NbdReplies.READ_HEADROOM + size : NbdConstants.SIMPLE_REPLY_LENGTH + size;
        if (n != expected) {
            throw new IllegalStateException(op + ": reply of " + n + " bytes, expected " + expected);
        }
    }

    private void handshake() {
        drain(); // greeting
        send(ByteBuffer.allocate(4).putInt(NbdConstants.CLIENT_FLAG_FIXED_NEWSTYLE
            | NbdConstants.CLIENT_FLAG_NO_ZEROES).array());
        if (structured) {
            send(option(NbdConstants.OPT_STRUCTURED_REPLY, new byte[0]));
            drain();
        }
        final byte[] name = "disk".getBytes(StandardCharsets.UTF_8);
        send(option(NbdConstants.OPT_GO, ByteBuffer.allocate(4 + name.length + 2).putInt(name.length).put(name)
            .putShort((short) 0).array()));
        drain();
    }

    private static byte[] option(final int option, final byte[] data) {
        return ByteBuffer.allocate(NbdConstants.OPTION_HEADER_LENGTH + data.length).putLong(NbdConstants.IHAVEOPT)
            .putInt(option).putInt(data.length).put(data).array();
    }

    private void send(final byte[] bytes) {
        final ByteBuf b = PooledByteBufAllocator.DEFAULT.directBuffer(bytes.length);
        b.writeBytes(bytes);
        pipeline.fireChannelRead(b);
        pipeline.fireChannelReadComplete();
        channel.runPendingTasks();
    }

    /** Reads and releases every outbound buffer; returns the bytes. */
    private long drain() {
        channel.runPendingTasks();
        long n = 0;
        ByteBuf b;
        while ((b = channel.readOutbound()) != null) {
            n += b.readableBytes();
            b.release();
        }
        return n;
    }

    private long once() {
        request.setLong(NbdRequest.OFFSET_OFFSET, offset);
        offset = (offset + 4096) % (FILE_SIZE - size + 1) & ~4095L;
        pipeline.fireChannelRead(request.retainedDuplicate());
        pipeline.fireChannelReadComplete();
        return drain();
    }

    @TearDown(Level.Trial)
    public void tearDown() throws Exception {
        request.release();
        channel.finishAndReleaseAll();
        volume.close();
        BenchFiles.delete(dir);
    }

    /** Returns the reply's length, so that nothing is optimised away. */
    @Benchmark
    public long roundTrip() {
        return once();
    }
}
