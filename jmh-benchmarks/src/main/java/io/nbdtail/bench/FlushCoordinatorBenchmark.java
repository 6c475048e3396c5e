package io.nbdtail.bench;

import io.nbdtail.storage.FileBlockDevice;
import io.nbdtail.storage.FlushCoordinator;
import io.nbdtail.storage.FlushWaiter;
import io.nbdtail.storage.StorageException;
import io.nbdtail.storage.StorageExecutor;
import io.nbdtail.storage.nativeio.NativeIo;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import org.openjdk.jmh.annotations.AuxCounters;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Threads;
import org.openjdk.jmh.annotations.Warmup;

import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;

/**
 * Group commit on a real file: each benchmark thread is one client doing "pwrite 4 KiB, then FLUSH and wait"
 * (a FUA write), with 1, 4 or 16 such clients at once. The coordinator's syncs run on a 4-thread
 * {@link StorageExecutor}, as in the server.
 *
 * <p>The time per operation is the latency one waiter sees. The secondary results {@code syncs} and
 * {@code waiters} are event counts summed over the threads and iterations; {@code syncs / waiters} is the number
 * of {@code fdatasync} calls per waiter, and 1 / that is the batching factor.
 */
@Warmup(iterations = 2, time = 2)
@Measurement(iterations = 5, time = 2)
public class FlushCoordinatorBenchmark extends BenchmarkBase {
    private static final long FILE_SIZE = 64L << 20;

    @State(Scope.Benchmark)
    public static class Shared {
        Path dir;
        FileBlockDevice device;
        StorageExecutor executor;
        FlushCoordinator coordinator;
        final AtomicInteger threads = new AtomicInteger();

        @Setup(Level.Trial)
        public void setUp() throws Exception {
            dir = BenchFiles.tempDir();
            device = FileBlockDevice.open(BenchFiles.filledFile(dir, "disk.raw", FILE_SIZE), false, NativeIo.get());
            executor = new StorageExecutor(4);
            coordinator = new FlushCoordinator(device, executor, failure -> {
                throw new IllegalStateException("sync failed", failure);
            });
        }

        @TearDown(Level.Trial)
        public void tearDown() throws Exception {
            executor.close();
            device.close();
            BenchFiles.delete(dir);
        }
    }

    /** One client: its own 1 MiB region of the file, a 4 KiB buffer, and a waiter that parks. */
    @State(Scope.Thread)
    public static class Client implements FlushWaiter {
        ByteBuf buf;
        int index;
        long base;
        long offset;
        volatile Thread waiting;
        volatile boolean flushed;
        volatile StorageException failure;

        @Setup(Level.Trial)
        public void setUp(final Shared shared) {
            buf = PooledByteBufAllocator.DEFAULT.directBuffer(4096, 4096);
            buf.writeZero(4096);
            index = shared.threads.getAndIncrement();
            base = (index % 64) * (1L << 20);
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            buf.release();
        }

        @Override
        public void onFlushed(final StorageException f) {
            failure = f;
            flushed = true;
            LockSupport.unpark(waiting);
        }
    }

    /** Per-operation counters across all threads. */
    @State(Scope.Thread)
    @AuxCounters(AuxCounters.Type.EVENTS)
    public static class Counts {
        public long syncs;
        public long waiters;
        private long syncsAtStart;
        private boolean reporter;

        @Setup(Level.Iteration)
        public void start(final Shared shared, final Client client) {
            reporter = client.index == 0;
            syncsAtStart = shared.coordinator.syncCount();
            syncs = 0;
            waiters = 0;
        }

        @TearDown(Level.Iteration)
        public void end(final Shared shared) {
            // One thread reports every sync of the iteration (JMH sums the threads' counters); waiters are counted
            // by each thread for itself.
            syncs = reporter ? shared.coordinator.syncCount() - syncsAtStart : 0;
        }
    }

    private static long fuaWrite(final Shared shared, final Client c, final Counts counts) throws Exception {
        final long o = c.base + c.offset;
        c.offset = (c.offset + 4096) & ((1 << 20) - 1);
        shared.device.write(c.buf.memoryAddress(), 4096, o);
        c.flushed = false;
        c.waiting = Thread.currentThread();
        shared.coordinator.flush(c);
        while (!c.flushed) {
            LockSupport.park(c);
        }
        if (c.failure != null) {
            throw c.failure;
        }
        counts.waiters++;
        return o;
    }

    @Benchmark
    @Threads(1)
    public long waiters01(final Shared shared, final Client c, final Counts counts) throws Exception {
        return fuaWrite(shared, c, counts);
    }

    @Benchmark
    @Threads(4)
    public long waiters04(final Shared shared, final Client c, final Counts counts) throws Exception {
        return fuaWrite(shared, c, counts);
    }

    @Benchmark
    @Threads(16)
    public long waiters16(final Shared shared, final Client c, final Counts counts) throws Exception {
        return fuaWrite(shared, c, counts);
    }
}
