package io.nbdtail.storage;

import org.junit.jupiter.api.Test;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import static org.assertj.core.api.Assertions.assertThat;

class StorageExecutorTest {
    @Test
    void shouldRunEveryTaskOnAStorageThread() throws Exception {
        final StorageExecutor executor = new StorageExecutor(3);
        final int tasks = 100_000;
        final AtomicInteger done = new AtomicInteger();
        final AtomicReference<String> wrongThread = new AtomicReference<>();
        final CountDownLatch all = new CountDownLatch(tasks);
        for (int i = 0; i < tasks; i++) {
            executor.execute(() -> {
                if (!Thread.currentThread().getName().startsWith("nbdtail-io-")) {
                    wrongThread.set(Thread.currentThread().getName());
                }
                done.incrementAndGet();
                all.countDown();
            });
        }
        assertThat(all.await(30, TimeUnit.SECONDS)).isTrue();
        assertThat(done.get()).isEqualTo(tasks);
        assertThat(wrongThread.get()).isNull();
        assertThat(executor.shutdown(5000)).isTrue();
    }

    @Test
    void shouldFinishQueuedTasksOnShutdownAndRunLaterOnesOnTheCaller() throws Exception {
        final StorageExecutor executor = new StorageExecutor(1);
        final CountDownLatch release = new CountDownLatch(1);
        final AtomicInteger done = new AtomicInteger();
        executor.execute(() -> {
            try {
                release.await();
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            done.incrementAndGet();
        });
        executor.execute(done::incrementAndGet);
        assertThat(executor.queued()).isBetween(1, 2);
        assertThat(executor.shutdown(50)).as("a task is still blocked").isFalse();

        release.countDown();
        assertThat(executor.shutdown(5000)).isTrue();
        assertThat(done.get()).isEqualTo(2);

        final Thread caller = Thread.currentThread();
        final AtomicReference<Thread> ranOn = new AtomicReference<>();
        executor.execute(() -> ranOn.set(Thread.currentThread()));
        assertThat(ranOn.get()).isSameAs(caller);
    }

    @Test
    void shouldKeepItsThreadsWhenATaskThrows() throws Exception {
        final StorageExecutor executor = new StorageExecutor(1, r -> {
            final Thread t = new Thread(r, "nbdtail-io-test");
            t.setDaemon(true);
            t.setUncaughtExceptionHandler((thread, e) -> { });
            return t;
        });
        executor.execute(() -> {
            throw new IllegalStateException("test: a task that fails");
        });
        final CountDownLatch ran = new CountDownLatch(1);
        executor.execute(ran::countDown);
        assertThat(ran.await(5, TimeUnit.SECONDS)).isTrue();
        executor.close();
    }

    @Test
    void shouldDropQueuedTasksOnClose() throws Exception {
        final StorageExecutor executor = new StorageExecutor(1);
        final CountDownLatch started = new CountDownLatch(1);
        final AtomicInteger done = new AtomicInteger();
        executor.execute(() -> {
            started.countDown();
            try {
                Thread.sleep(60_000);
            } catch (final InterruptedException e) {
                // close() interrupts running tasks
            }
        });
        executor.execute(done::incrementAndGet);
        assertThat(started.await(5, TimeUnit.SECONDS)).isTrue();
        executor.close();
        assertThat(executor.shutdown(5000)).isTrue();
        assertThat(done.get()).isZero();
    }
}
