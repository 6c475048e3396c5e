package io.nbdtail.replication;

import io.nbdtail.storage.StorageException;
import org.junit.jupiter.api.Test;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The freeze is a quiesce barrier: it waits for admitted writes and holds new ones; the fence refuses all. */
class WriteGateTest {
    private final DirtyMap dirty = new DirtyMap(1 << 20, 4096);
    private final WriteGate gate = new WriteGate(dirty);

    @Test
    void freezeShouldWaitForAdmittedWritesAndHoldNewOnes() throws Exception {
        gate.beforeWrite(0, 4096);
        final CompletableFuture<Boolean> freeze = CompletableFuture.supplyAsync(() -> {
            try {
                return gate.freeze(5_000);
            } catch (final InterruptedException e) {
                throw new RuntimeException(e);
            }
        });
        Thread.sleep(100);
        assertThat(freeze).as("waits for the admitted write").isNotDone();
        gate.afterWrite(0, 4096, true);
        assertThat(freeze.get(5, TimeUnit.SECONDS)).isTrue();
        assertThat(dirty.dirtyChunks()).isEqualTo(1);
        final CompletableFuture<Void> held = CompletableFuture.runAsync(() -> {
            try {
                gate.beforeWrite(8192, 4096);
            } catch (final StorageException e) {
                throw new RuntimeException(e);
            }
        });
        Thread.sleep(100);
        assertThat(held).as("a new write is held while frozen").isNotDone();
        gate.unfreeze();
        held.get(5, TimeUnit.SECONDS);
    }

    @Test
    void freezeShouldGiveUpAndReopenWhenWritesDoNotFinish() throws Exception {
        gate.beforeWrite(0, 4096);
        assertThat(gate.freeze(50)).isFalse();
        assertThat(gate.frozen()).isFalse();
        gate.beforeWrite(4096, 4096);
    }

    @Test
    void fenceShouldRefuseHeldAndLaterWrites() throws Exception {
        assertThat(gate.freeze(1_000)).isTrue();
        final CompletableFuture<Void> held = CompletableFuture.runAsync(() -> {
            try {
                gate.beforeWrite(0, 512);
            } catch (final StorageException e) {
                throw new RuntimeException(e);
            }
        });
        Thread.sleep(50);
        gate.fence(new StorageException(StorageException.Kind.VOLUME_FAILED, "moved"));
        assertThatThrownBy(() -> held.get(5, TimeUnit.SECONDS)).hasMessageContaining("moved");
        assertThatThrownBy(() -> gate.beforeWrite(0, 512)).hasMessageContaining("moved");
    }

    @Test
    void aWriteThatStartedBeforeTheGateShouldStillBeMarkedDirty() {
        gate.afterWrite(4096 * 10, 100, false);
        assertThat(dirty.dirtyChunks()).isEqualTo(1);
    }

    @Test
    void throttleShouldDelayBoundedByChunkCost() throws Exception {
        gate.throttle(4096 * 10);
        final long start = System.nanoTime();
        for (int i = 0; i < 20; i++) {
            gate.beforeWrite(i * 4096L, 1);
            gate.afterWrite(i * 4096L, 1, true);
        }
        final long millis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
        // 20 chunks at 10 chunks/s would be 2 s; each wait is capped at 50 ms.
        assertThat(millis).isBetween(200L, 1_500L);
    }
}
