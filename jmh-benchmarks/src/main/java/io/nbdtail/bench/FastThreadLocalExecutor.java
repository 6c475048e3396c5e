package io.nbdtail.bench;

import io.netty.util.concurrent.FastThreadLocalThread;

import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * JMH's worker threads as Netty {@link FastThreadLocalThread}s, like the server's event loops
 * ({@code -Djmh.executor=CUSTOM -Djmh.executor.class=io.nbdtail.bench.FastThreadLocalExecutor}, set in
 * {@link BenchmarkBase}).
 *
 * <p>This matters: in Netty 4.2 {@code Recycler.get()} on a plain thread returns a new object every time (it
 * pools only on FastThreadLocalThreads), and the pooled allocator gives plain threads no thread cache. On JMH's
 * default threads every pooled {@code NbdRequest}, {@code NbdOperation} and derived buffer would count as an
 * allocation that the event loop does not make. Benchmarks that model a storage thread (a plain thread in the
 * server) say so and use JMH's default executor.
 */
public final class FastThreadLocalExecutor extends ThreadPoolExecutor {
    public FastThreadLocalExecutor(final int maxThreads, final String prefix) {
        // An unbounded queue, never "caller runs": JMH's control thread must never end up running a benchmark
        // loop itself (it would never tell the iteration to stop).
        super(maxThreads, maxThreads, 1, TimeUnit.MINUTES, new LinkedBlockingQueue<>(), new Factory(prefix));
    }

    private static final class Factory implements java.util.concurrent.ThreadFactory {
        private final String prefix;
        private final AtomicInteger n = new AtomicInteger();

        Factory(final String prefix) {
            this.prefix = prefix;
        }

        @Override
        public Thread newThread(final Runnable r) {
            final Thread t = new FastThreadLocalThread(r, prefix + "-" + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        }
    }
}
