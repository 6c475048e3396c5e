package io.nbdtail.bench;

import io.nbdtail.nbd.codec.NbdRequestDecoder;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.protocol.NbdRequest;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import io.netty.channel.embedded.EmbeddedChannel;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import java.util.concurrent.TimeUnit;

/**
 * Decoding of one transmission request: a 28-byte header alone (READ) or followed by its payload (WRITE).
 * Run with {@code -prof gc} to see the allocation per request.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"-Dio.netty.leakDetection.level=disabled"})
public class RequestDecoderBenchmark {
    @Param({"0", "4096"})
    int payload;

    private EmbeddedChannel channel;
    private ByteBuf request;

    @Setup(Level.Trial)
    public void setUp() {
        channel = new EmbeddedChannel(new NbdRequestDecoder(32 << 20, 128 << 20));
        request = PooledByteBufAllocator.DEFAULT.directBuffer(NbdConstants.REQUEST_LENGTH + payload);
        request.writeInt(NbdConstants.REQUEST_MAGIC);
        request.writeShort(0);
        request.writeShort(payload == 0 ? 0 : 1);
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
        channel.writeInbound(request.retainedDuplicate());
        final NbdRequest decoded = channel.readInbound();
        final long cookie = decoded.cookie();
        decoded.release();
        return cookie;
    }
}
