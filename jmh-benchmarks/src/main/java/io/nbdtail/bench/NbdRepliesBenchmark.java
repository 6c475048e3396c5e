package io.nbdtail.bench;

import io.nbdtail.nbd.codec.NbdReplies;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.protocol.NbdError;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.PooledByteBufAllocator;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Reply encoding ({@link NbdReplies}) with the server's allocator: a simple reply (WRITE/FLUSH success, every
 * reply without structured replies), the NONE+DONE chunk, a chunk header written into an existing buffer (what
 * a READ reply does in front of its data) and an ERROR chunk with the kind of message the handler builds.
 * Each allocating method releases its buffer, as the socket write would.
 */
@State(Scope.Thread)
public class NbdRepliesBenchmark extends BenchmarkBase {
    private final ByteBufAllocator alloc = PooledByteBufAllocator.DEFAULT;
    private ByteBuf scratch;
    private long cookie;
    /** A message of the length the handler's "request out of range" errors have. */
    private final String message = "request out of range: offset=17179869184 length=4096 size=1073741824";

    @Setup(Level.Trial)
    public void setUp() {
        requireFastThreadLocalThread();
        scratch = alloc.directBuffer(NbdReplies.READ_HEADROOM);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        scratch.release();
    }

    @Benchmark
    public int simpleReply() {
        final ByteBuf b = NbdReplies.simple(alloc, ++cookie, 0);
        final int n = b.readableBytes();
        b.release();
        return n;
    }

    @Benchmark
    public int doneChunk() {
        final ByteBuf b = NbdReplies.done(alloc, ++cookie);
        final int n = b.readableBytes();
        b.release();
        return n;
    }

    /** The OFFSET_DATA header of a READ reply, into the reply buffer the storage thread already has. */
    @Benchmark
    public int chunkHeader() {
        scratch.clear();
        NbdReplies.writeChunkHeader(scratch, NbdConstants.REPLY_FLAG_DONE, NbdConstants.REPLY_TYPE_OFFSET_DATA,
            ++cookie, 8 + 4096);
        scratch.writeLong(cookie << 12);
        return scratch.writerIndex();
    }

    @Benchmark
    public int errorChunk() {
        final ByteBuf b = NbdReplies.error(alloc, ++cookie, NbdError.EINVAL.code(), message, -1);
        final int n = b.readableBytes();
        b.release();
        return n;
    }
}
