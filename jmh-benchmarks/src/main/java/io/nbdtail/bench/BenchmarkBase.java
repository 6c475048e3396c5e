package io.nbdtail.bench;

import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Warmup;

import java.util.concurrent.TimeUnit;

/**
 * Settings shared by every benchmark: one fork, short warm-up and measurement (the machine has 2 noisy cores, so
 * repeat whole runs and take medians rather than lengthening one), average time in nanoseconds.
 *
 * <p>Leak detection is off: at its default (simple) level it samples one buffer in 128 and allocates a stack
 * trace for it, which would show up in {@code gc.alloc.rate.norm}. {@code run.sh} passes the server's module
 * flags with {@code -jvmArgsPrepend}, so this {@code jvmArgsAppend} survives.
 *
 * <p>The benchmark threads are Netty {@code FastThreadLocalThread}s, as the server's event loops are (see
 * {@link FastThreadLocalExecutor}); a benchmark that models a storage thread overrides {@code @Fork} without it.
 *
 * <p>Run with {@code -prof gc}: the number that matters for the hot paths is {@code gc.alloc.rate.norm}, the
 * bytes allocated on the Java heap per operation. Pooled Netty buffers and native memory do not count there.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"-Dio.netty.leakDetection.level=disabled", "-Xms1g", "-Xmx1g",
    "-Djmh.executor=CUSTOM", "-Djmh.executor.class=io.nbdtail.bench.FastThreadLocalExecutor"})
public abstract class BenchmarkBase {
    /**
     * Fails the trial unless it runs on a {@code FastThreadLocalThread}: allocation numbers taken on a plain thread
     * would count Recycler misses that the server's event loops do not have. Call from a {@code @Setup}.
     */
    static void requireFastThreadLocalThread() {
        if (!(Thread.currentThread() instanceof io.netty.util.concurrent.FastThreadLocalThread)) {
            throw new IllegalStateException("benchmark thread " + Thread.currentThread().getName() + " is not a"
                + " FastThreadLocalThread: run with -Djmh.executor=CUSTOM"
                + " -Djmh.executor.class=io.nbdtail.bench.FastThreadLocalExecutor (BenchmarkBase's @Fork does)");
        }
    }
}
