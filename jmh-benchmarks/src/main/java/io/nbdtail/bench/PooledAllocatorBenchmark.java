package io.nbdtail.bench;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import io.netty.util.concurrent.FastThreadLocalThread;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;

/**
 * The READ reply buffer as a storage thread gets it: {@code directBuffer(20 + 8 + size)} from the pooled
 * allocator, then released. Storage threads ({@code nbdtail-io-N}) are plain {@link Thread}s, and Netty's
 * {@code io.netty.allocator.useCacheForAllThreads} defaults to false, so they have no per-thread cache: every
 * allocation and release goes to a shared arena under its lock. JMH's worker threads are plain threads too, so
 * {@code threadCache=false} is what the server does today and {@code true} is what
 * {@code -Dio.netty.allocator.useCacheForAllThreads=true} would give. This class runs on JMH's plain threads (its
 * own {@code @Fork} drops {@link FastThreadLocalExecutor}), so the buffer object itself also comes from a
 * {@code Recycler} that does not pool on plain threads: {@code gc.alloc.rate.norm} here is what each READ reply
 * allocates on a storage thread. A {@link FastThreadLocalThread} would get both the pooled object and the cache.
 */
@State(Scope.Thread)
@Fork(value = 1, jvmArgsAppend = {"-Dio.netty.leakDetection.level=disabled", "-Xms1g", "-Xmx1g"})
public class PooledAllocatorBenchmark extends BenchmarkBase {
    @Param({"false", "true"})
    boolean threadCache;

    @Param({"4096", "65536"})
    int size;

    private PooledByteBufAllocator alloc;

    @Setup(Level.Trial)
    public void setUp() {
        final PooledByteBufAllocator d = PooledByteBufAllocator.DEFAULT;
        alloc = new PooledByteBufAllocator(true, d.metric().numHeapArenas(), d.metric().numDirectArenas(),
            PooledByteBufAllocator.defaultPageSize(), PooledByteBufAllocator.defaultMaxOrder(),
            PooledByteBufAllocator.defaultSmallCacheSize(), PooledByteBufAllocator.defaultNormalCacheSize(),
            threadCache);
    }

    @Benchmark
    public int allocateRelease() {
        final ByteBuf b = alloc.directBuffer(28 + size);
        final int c = b.capacity();
        b.release();
        return c;
    }
}
