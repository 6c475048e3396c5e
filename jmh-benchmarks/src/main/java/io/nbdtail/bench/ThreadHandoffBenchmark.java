package io.nbdtail.bench;

import io.nbdtail.storage.StorageExecutor;
import io.netty.channel.EventLoop;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.EpollIoHandler;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

import java.util.concurrent.locks.LockSupport;

/**
 * What the thread hops of one request cost on this machine, without any I/O: the server hands every request
 * from its epoll event loop to a storage thread ({@link StorageExecutor}, a ThreadPoolExecutor) and back
 * ({@code EventLoop.execute}, an eventfd wake-up).
 *
 * <ul>
 *   <li>{@code loop}: benchmark thread -> event loop -> benchmark thread (two wake-ups: the baseline);</li>
 *   <li>{@code loopStorageLoop}: benchmark thread -> event loop -> storage thread -> event loop -> benchmark
 *       thread, the server's path for every request.</li>
 * </ul>
 * {@code loopStorageLoop - loop} is the price of the storage round trip per request at queue depth 1, which
 * running page-cache reads inline on the event loop would save.
 */
@State(Scope.Thread)
public class ThreadHandoffBenchmark extends BenchmarkBase {
    @Param({"loop", "loopStorageLoop"})
    String path;

    private MultiThreadIoEventLoopGroup group;
    private EventLoop loop;
    private StorageExecutor storage;
    private volatile boolean done;
    private Thread caller;
    private Runnable first;
    private final Runnable finish = () -> {
        done = true;
        LockSupport.unpark(caller);
    };
    private final Runnable backToLoop = () -> loop.execute(finish);

    @Setup(Level.Trial)
    public void setUp() {
        group = new MultiThreadIoEventLoopGroup(1, EpollIoHandler.newFactory());
        loop = group.next();
        storage = new StorageExecutor(4);
        caller = Thread.currentThread();
        first = path.equals("loop") ? finish : () -> storage.execute(backToLoop);
    }

    @TearDown(Level.Trial)
    public void tearDown() throws Exception {
        storage.close();
        group.shutdownGracefully(0, 1, java.util.concurrent.TimeUnit.SECONDS).sync();
    }

    @Benchmark
    public boolean roundTrip() {
        done = false;
        loop.execute(first);
        while (!done) {
            LockSupport.park(this);
        }
        return done;
    }
}
