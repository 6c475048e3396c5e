package io.nbdtail.storage;

import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeMetadata;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.time.Instant;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * Group commit must never let a FLUSH ride on a sync that started before the FLUSH arrived, must batch waiters,
 * and must never turn a failed sync into a later success.
 */
class FlushCoordinatorTest {
    private final ExecutorService executor = Executors.newFixedThreadPool(4);

    @AfterEach
    void tearDown() {
        executor.shutdownNow();
    }

    /** A device whose sync blocks until the test lets it go, and can be told to fail. */
    static final class ControlledDevice implements BlockDevice {
        final AtomicInteger syncs = new AtomicInteger();
        final Semaphore release = new Semaphore(0);
        final CountDownLatch syncStarted = new CountDownLatch(1);
        volatile boolean block;
        volatile boolean fail;

        @Override
        public long size() {
            return 1 << 20;
        }

        @Override
        public boolean isBlockDevice() {
            return false;
        }

        @Override
        public void read(final ByteBuffer dst, final long offset) {
            dst.position(dst.limit());
        }

        @Override
        public void write(final ByteBuffer src, final long offset) {
            src.position(src.limit());
        }

        @Override
        public void read(final long address, final int length, final long offset) {
        }

        @Override
        public void write(final long address, final int length, final long offset) {
        }

        @Override
        public void writeZeroes(final long offset, final long length, final boolean mayUnmap, final boolean fastOnly) {
        }

        @Override
        public void discard(final long offset, final long length) {
        }

        @Override
        public long allocation(final long offset, final long length, final ExtentSink sink, final int maxExtents) {
            sink.extent(length, 0);
            return length;
        }

        @Override
        public void prefetch(final long offset, final long length) {
        }

        @Override
        public void grow(final long newSize) {
        }

        @Override
        public void sync() throws StorageException {
            syncs.incrementAndGet();
            syncStarted.countDown();
            if (block) {
                release.acquireUninterruptibly();
            }
            if (fail) {
                throw new StorageException(StorageException.Kind.IO_ERROR, "fdatasync failed: Input/output error");
            }
        }

        @Override
        public void close() {
        }
    }

    private static CompletableFuture<StorageException> waiter(final FlushCoordinator coordinator) {
        final CompletableFuture<StorageException> f = new CompletableFuture<>();
        coordinator.flush(f::complete);
        return f;
    }

    @Test
    void shouldMakeAWaiterThatArrivesDuringASyncWaitForTheNextSync() throws Exception {
        final ControlledDevice device = new ControlledDevice();
        device.block = true;
        final FlushCoordinator coordinator = new FlushCoordinator(device, executor, e -> { });

        final CompletableFuture<StorageException> first = waiter(coordinator);
        assertThat(device.syncStarted.await(5, TimeUnit.SECONDS)).isTrue();
        // The first sync is running; this waiter's writes may not be covered by it.
        final CompletableFuture<StorageException> second = waiter(coordinator);

        device.release.release();
        assertThat(first.get(5, TimeUnit.SECONDS)).isNull();
        assertThat(second).isNotDone();
        // The first waiter is answered before the coordinator's loop starts the second sync: wait for it.
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        while (device.syncs.get() < 2 && System.nanoTime() < deadline) {
            Thread.sleep(1);
        }
        assertThat(device.syncs.get()).isEqualTo(2);

        device.release.release();
        assertThat(second.get(5, TimeUnit.SECONDS)).isNull();
        assertThat(device.syncs.get()).isEqualTo(2);
    }

    @Test
    void shouldShareOneSyncAmongWaitersThatArriveTogether() throws Exception {
        final ControlledDevice device = new ControlledDevice();
        device.block = true;
        final FlushCoordinator coordinator = new FlushCoordinator(device, executor, e -> { });
        final CompletableFuture<StorageException> first = waiter(coordinator);
        assertThat(device.syncStarted.await(5, TimeUnit.SECONDS)).isTrue();
        final CompletableFuture<?>[] batch = new CompletableFuture<?>[50];
        for (int i = 0; i < batch.length; i++) {
            batch[i] = waiter(coordinator);
        }
        device.block = false;
        device.release.release();
        CompletableFuture.allOf(batch).get(5, TimeUnit.SECONDS);
        assertThat(first.get()).isNull();
        assertThat(device.syncs.get()).as("one sync for the first waiter, one for the 50 that came during it")
            .isEqualTo(2);
        assertThat(coordinator.waitersServed()).isEqualTo(51);
    }

    @Test
    void shouldNeverAnswerAFlushQueuedBehindAFailedSyncWithSuccess() throws Exception {
        final ControlledDevice device = new ControlledDevice();
        device.block = true;
        device.fail = true;
        final FlushCoordinator coordinator = new FlushCoordinator(device, executor, e -> { });
        final CompletableFuture<StorageException> first = waiter(coordinator);
        assertThat(device.syncStarted.await(5, TimeUnit.SECONDS)).isTrue();
        // Joins while the failing sync runs. The kernel reports a writeback error once, so a second fdatasync
        // would return 0 although this waiter's writes were among the dropped pages.
        final CompletableFuture<StorageException> second = waiter(coordinator);
        device.block = false;
        device.release.release();
        assertThat(first.get(5, TimeUnit.SECONDS)).isNotNull();
        device.fail = false;
        assertThat(second.get(5, TimeUnit.SECONDS)).as("a later sync must not turn into a success").isNotNull();
        assertThat(device.syncs.get()).as("no second fdatasync after a failed one").isEqualTo(1);
        assertThatThrownBy(coordinator::syncNow).isInstanceOf(StorageException.class);
    }

    @Test
    void shouldFailTheVolumeForWritesAfterAFailedSyncAndNeverSyncAgain() throws Exception {
        final ControlledDevice device = new ControlledDevice();
        device.fail = true;
        final VolumeMetadata metadata = new VolumeMetadata(VolumeMetadata.FORMAT_VERSION, UUID.randomUUID(), "v",
            VolumeMetadata.Kind.FILE, device.size(), null, "", false, Instant.now());
        try (Volume volume = new Volume(metadata, device, executor, () -> { })) {
            final CompletableFuture<StorageException> flush = new CompletableFuture<>();
            volume.flush(flush::complete);
            final StorageException failure = flush.get(5, TimeUnit.SECONDS);
            assertThat(failure).isNotNull();
            assertThat(failure.kind()).isEqualTo(StorageException.Kind.IO_ERROR);
            assertThat(volume.failure()).isNotNull();

            // The disc "recovers": a retried sync would now succeed, and must never be asked for.
            device.fail = false;
            final int syncsBefore = device.syncs.get();
            final CompletableFuture<StorageException> again = new CompletableFuture<>();
            volume.flush(again::complete);
            assertThat(again.get(5, TimeUnit.SECONDS).kind()).isEqualTo(StorageException.Kind.VOLUME_FAILED);
            assertThat(device.syncs.get()).isEqualTo(syncsBefore);

            assertThatThrownBy(() -> volume.write(ByteBuffer.allocate(512), 0))
                .isInstanceOfSatisfying(StorageException.class,
                    e -> assertThat(e.kind()).isEqualTo(StorageException.Kind.VOLUME_FAILED))
                .hasMessageContaining("stopped taking writes");
            assertThatThrownBy(() -> volume.writeZeroes(0, 512, true, false)).isInstanceOf(StorageException.class);
            assertThatThrownBy(() -> volume.discard(0, 512)).isInstanceOf(StorageException.class);
            // Reads keep working.
            final ByteBuffer dst = ByteBuffer.allocate(512);
            volume.read(dst, 0);
            assertThat(dst.hasRemaining()).isFalse();
        }
        assertThat(device.syncs.get()).as("close does not sync a failed volume").isEqualTo(1);
    }
}
