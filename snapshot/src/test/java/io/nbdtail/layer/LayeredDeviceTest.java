package io.nbdtail.layer;

import io.nbdtail.storage.ExtentSink;
import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeException;
import io.nbdtail.volume.VolumeService;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicReference;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The layer chain against a model: a shadow copy of what every byte of the live volume and of every snapshot
 * must read, checked after every step (reliability.md §6.2, S1–S8).
 */
class LayeredDeviceTest {
    private static final int CLUSTER = LayeredDevice.CLUSTER_SIZE;
    /** Not a multiple of the cluster size, so the last cluster is partial. */
    private static final int SIZE = 40 * CLUSTER + 3 * 512;

    @TempDir
    Path tmp;
    private VolumeService service;
    private Volume volume;

    @org.junit.jupiter.api.AfterEach
    void tearDown() {
        volume.close();
    }

    @BeforeEach
    void setUp() throws Exception {
        service = VolumeService.open(tmp.resolve("data"));
        service.create("v", SIZE, null, "", false);
        volume = service.openVolume("v", Runnable::run);
    }

    /** What the live volume and each snapshot may read; TRIMmed bytes are unspecified until written again. */
    private static final class Model {
        byte[] bytes = new byte[SIZE];
        BitSet unknown = new BitSet(SIZE);

        Model copy() {
            final Model m = new Model();
            m.bytes = bytes.clone();
            m.unknown = (BitSet) unknown.clone();
            return m;
        }
    }

    private Model live = new Model();
    private final Map<String, Model> snapshots = new LinkedHashMap<>();

    private void write(final long offset, final byte[] data) throws Exception {
        volume.write(ByteBuffer.wrap(data), offset);
        System.arraycopy(data, 0, live.bytes, (int) offset, data.length);
        live.unknown.clear((int) offset, (int) offset + data.length);
    }

    private void zero(final long offset, final int length, final boolean mayUnmap) throws Exception {
        volume.writeZeroes(offset, length, mayUnmap, false);
        Arrays.fill(live.bytes, (int) offset, (int) offset + length, (byte) 0);
        live.unknown.clear((int) offset, (int) offset + length);
    }

    private void trim(final long offset, final int length) throws Exception {
        volume.discard(offset, length);
        live.unknown.set((int) offset, (int) offset + length);
    }

    private static void assertReads(final ReadFn read, final Model model, final String what) throws Exception {
        final ByteBuffer buffer = ByteBuffer.allocateDirect(SIZE);
        read.read(buffer, 0);
        for (int i = 0; i < SIZE; i++) {
            if (!model.unknown.get(i) && buffer.get(i) != model.bytes[i]) {
                throw new AssertionError(what + ": byte " + i + " (cluster " + i / CLUSTER + ") reads "
                    + buffer.get(i) + ", expected " + model.bytes[i]);
            }
        }
    }

    @FunctionalInterface
    private interface ReadFn {
        void read(ByteBuffer dst, long offset) throws Exception;
    }

    private void verifyAll() throws Exception {
        assertReads(volume::read, live, "live volume");
        for (final Map.Entry<String, Model> e : snapshots.entrySet()) {
            try (var view = volume.layers().snapshotView(e.getKey())) {
                assertReads(view::read, e.getValue(), "snapshot " + e.getKey());
            }
        }
    }

    private void reopen() throws Exception {
        volume.close();
        volume = service.openVolume("v", Runnable::run);
    }

    private static byte[] random(final Random random, final int length) {
        final byte[] b = new byte[length];
        random.nextBytes(b);
        return b;
    }

    @Test
    void snapshotKeepsOldDataForSubClusterSpanningAndUnalignedWrites() throws Exception {
        final Random random = new Random(1);
        write(0, random(random, SIZE));
        volume.layers().createSnapshot("s1", Instant.now());
        snapshots.put("s1", live.copy());
        write(100, random(random, 7));                       // sub-cluster, unaligned
        write(3L * CLUSTER - 1000, random(random, 5000));     // spans a cluster boundary
        write(10L * CLUSTER, random(random, 3 * CLUSTER));   // whole clusters
        write(SIZE - 700, random(random, 700));              // the partial last cluster
        verifyAll();
        reopen();
        verifyAll();
    }

    @Test
    void zeroAndTrimAboveDataReadZerosAndNeverExposeTheSnapshot() throws Exception {
        final Random random = new Random(2);
        write(0, random(random, SIZE));
        volume.layers().createSnapshot("s1", Instant.now());
        snapshots.put("s1", live.copy());
        zero(2L * CLUSTER, 2 * CLUSTER, true);
        zero(5L * CLUSTER + 10, 100, false);
        volume.discard(8L * CLUSTER, CLUSTER);
        // a whole-cluster TRIM is recorded as zeros, so here the model is exact
        Arrays.fill(live.bytes, 8 * CLUSTER, 9 * CLUSTER, (byte) 0);
        verifyAll();
        final List<long[]> extents = new ArrayList<>();
        volume.allocation(0, 10L * CLUSTER, (n, f) -> extents.add(new long[] {n, f}), 100);
        assertThat(extents).extracting(e -> e[1]).contains((long) ExtentSink.ZERO);
        volume.flush(e -> assertThat(e).isNull());
        reopen();
        verifyAll();
    }

    @Test
    void concurrentWritersToOneNewClusterKeepEachOthersBytes() throws Exception {
        write(0, new byte[SIZE]);
        volume.layers().createSnapshot("s1", Instant.now());
        snapshots.put("s1", live.copy());
        final Random random = new Random(3);
        for (int round = 0; round < 20; round++) {
            final long cluster = 20L + round;
            final byte[] a = random(random, 4096);
            final byte[] b = random(random, 4096);
            final Thread t1 = Thread.ofPlatform().start(() -> unchecked(() -> volume.write(ByteBuffer.wrap(a),
                cluster * CLUSTER)));
            final Thread t2 = Thread.ofPlatform().start(() -> unchecked(() -> volume.write(ByteBuffer.wrap(b),
                cluster * CLUSTER + 8192)));
            t1.join();
            t2.join();
            System.arraycopy(a, 0, live.bytes, (int) (cluster * CLUSTER), 4096);
            System.arraycopy(b, 0, live.bytes, (int) (cluster * CLUSTER + 8192), 4096);
        }
        verifyAll();
    }

    @ParameterizedTest
    @ValueSource(ints = {11, 12, 13, 14, 15})
    void randomWorkloadAgainstTheModel(final int seed) throws Exception {
        final Random random = new Random(seed);
        int names = 0;
        for (int step = 0; step < 300; step++) {
            final int op = random.nextInt(100);
            final int offset = random.nextInt(SIZE);
            final int length = 1 + random.nextInt(Math.min(SIZE - offset, 3 * CLUSTER));
            if (op < 50) {
                write(offset, random(random, length));
            } else if (op < 60) {
                zero(offset, length, random.nextBoolean());
            } else if (op < 66) {
                trim(offset, length);
            } else if (op < 72 && volume.layers().depth() < LayeredDevice.MAX_DEPTH - 1) {
                final String name = "s" + names++;
                volume.layers().createSnapshot(name, Instant.now());
                snapshots.put(name, live.copy());
            } else if (op < 78 && !snapshots.isEmpty()) {
                final String name = pick(random);
                volume.layers().deleteSnapshot(name);
                snapshots.remove(name);
            } else if (op < 81 && !snapshots.isEmpty()) {
                final String name = pick(random);
                volume.layers().rollback(name);
                live = snapshots.get(name).copy();
            } else if (op < 84) {
                volume.flush(e -> assertThat(e).isNull());
                reopen();
            }
            if (step % 10 == 0) {
                verifyAll();
            }
        }
        verifyAll();
        // a clean close syncs: everything reads back after a reopen
        reopen();
        verifyAll();
    }

    private String pick(final Random random) {
        final List<String> names = new ArrayList<>(snapshots.keySet());
        return names.get(random.nextInt(names.size()));
    }

    @Test
    void deleteUnderConcurrentWritesKeepsTheGuestsWrites() throws Exception {
        final Random random = new Random(4);
        write(0, random(random, SIZE));
        volume.layers().createSnapshot("s1", Instant.now());
        snapshots.put("s1", live.copy());
        write(0, random(random, 5 * CLUSTER));
        volume.layers().createSnapshot("s2", Instant.now());
        snapshots.put("s2", live.copy());
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        final byte[][] written = new byte[SIZE / CLUSTER][];
        final Thread writer = Thread.ofPlatform().start(() -> {
            final Random r = new Random(5);
            try {
                for (int i = 0; i < 400; i++) {
                    final int cluster = r.nextInt(SIZE / CLUSTER);
                    final byte[] data = random(r, 1000);
                    volume.write(ByteBuffer.wrap(data), (long) cluster * CLUSTER + 300);
                    synchronized (written) {
                        written[cluster] = data;
                    }
                }
            } catch (final Throwable t) {
                failure.set(t);
            }
        });
        volume.layers().deleteSnapshot("s1");
        snapshots.remove("s1");
        writer.join();
        assertThat(failure.get()).isNull();
        for (int c = 0; c < written.length; c++) {
            if (written[c] != null) {
                System.arraycopy(written[c], 0, live.bytes, c * CLUSTER + 300, 1000);
            }
        }
        verifyAll();
        assertThat(volume.layers().depth()).isEqualTo(2);
        reopen();
        verifyAll();
    }

    @Test
    void depthAndDirtyBitmapDescribeTheChain() throws Exception {
        write(0, new byte[] {1});                              // cluster 0 in the base
        volume.layers().createSnapshot("s1", Instant.now());
        write(3L * CLUSTER, new byte[] {2});                   // cluster 3 in the active layer
        final List<long[]> depth = new ArrayList<>();
        volume.depth(0, 5L * CLUSTER, (n, d) -> depth.add(new long[] {n, d}), 100);
        assertThat(depth.getFirst()[1]).isEqualTo(2);           // base data: depth 2
        assertThat(depth).anySatisfy(e -> assertThat(e).containsExactly(CLUSTER, 1));
        final List<long[]> dirty = new ArrayList<>();
        volume.dirty("s1", 0, 5L * CLUSTER, (n, d) -> dirty.add(new long[] {n, d}), 100);
        assertThat(dirty).containsExactly(new long[] {3L * CLUSTER, 0}, new long[] {CLUSTER, 1},
            new long[] {CLUSTER, 0});
        assertThat(volume.dirtyBitmaps()).containsExactly("s1");
    }

    @Test
    void chainDepthIsCappedWithAClearError() throws Exception {
        for (int i = 0; i < LayeredDevice.MAX_DEPTH - 1; i++) {
            volume.layers().createSnapshot("s" + i, Instant.now());
        }
        assertThatThrownBy(() -> volume.layers().createSnapshot("one-more", Instant.now()))
            .isInstanceOf(SnapshotException.class).hasMessageContaining("delete a snapshot");
    }

    @Test
    void aTornMapPageFallsBackToTheOlderCopyAndABrokenOneNeedsACheck() throws Exception {
        volume.layers().createSnapshot("s1", Instant.now());
        write(0, new byte[] {7});
        volume.flush(e -> assertThat(e).isNull());
        write(CLUSTER, new byte[] {8});
        volume.flush(e -> assertThat(e).isNull());                 // page 0 written twice: both slots valid
        final java.util.UUID active = volume.layers().manifest().active().id();
        volume.close();
        final Path map = LayeredDevice.mapPath(tmp.resolve("data/volumes/v"), active);
        try (FileChannel ch = FileChannel.open(map, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(new byte[] {0x55}), 2 * 4096 + 100); // slot 1 (the newer copy) torn
        }
        volume = service.openVolume("v", Runnable::run);
        final ByteBuffer b = ByteBuffer.allocate(1);
        volume.read(b, 0);
        assertThat(b.get(0)).isEqualTo((byte) 7);                  // the older copy still holds cluster 0
        volume.close();
        try (FileChannel ch = FileChannel.open(map, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.wrap(new byte[] {0x55}), 4096 + 100);     // now slot 0 too
        }
        assertThatThrownBy(() -> service.openVolume("v", Runnable::run)).isInstanceOf(VolumeException.class)
            .hasMessageContaining("check").extracting(e -> ((VolumeException) e).code())
            .isEqualTo(VolumeException.Code.NEEDS_CHECK);
    }

    @Test
    void aTornFirstCopyOfAMapPageReadsAsNeverWrittenNotAsCorrupt() throws Exception {
        volume.layers().createSnapshot("s1", Instant.now());
        write(0, new byte[] {7});
        volume.flush(e -> assertThat(e).isNull());
        final java.util.UUID active = volume.layers().manifest().active().id();
        volume.close();
        final Path map = LayeredDevice.mapPath(tmp.resolve("data/volumes/v"), active);
        try (FileChannel ch = FileChannel.open(map, StandardOpenOption.WRITE)) {
            // the power cut tore the first copy of page 0 (slot 0) before its sync: its checksum fails
            ch.write(ByteBuffer.wrap(new byte[] {0x55}), 4096 + 100);
        }
        final Checker.Report report = service.check("v", false);
        assertThat(report.corruptions()).isEmpty();
        volume = service.openVolume("v", Runnable::run);
        final ByteBuffer b = ByteBuffer.allocate(1);
        volume.read(b, 0);
        assertThat(b.get(0)).isEqualTo((byte) 0);               // the unsynced state is lost, the snapshot's shows
    }

    @Test
    void aMapWithBlankPagesGetsItsEmptySpareCopiesWhenOpened() throws Exception {
        final Path file = tmp.resolve("old.map");
        final java.util.UUID id = java.util.UUID.randomUUID();
        ClusterMap.create(file, id, SIZE, CLUSTER).close();
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(4096), 2 * 4096);      // slot 1 blank, as maps made before the fix were
        }
        ClusterMap.open(file, id, SIZE, CLUSTER, false).close();
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            final ByteBuffer spare = ByteBuffer.allocate(4096).order(java.nio.ByteOrder.LITTLE_ENDIAN);
            ch.read(spare, 2 * 4096);
            assertThat(spare.flip().getLong(16)).isEqualTo(id.getLeastSignificantBits()); // a valid empty copy again
        }
    }

    private static void unchecked(final ThrowingRunnable r) {
        try {
            r.run();
        } catch (final Exception e) {
            throw new RuntimeException(e);
        }
    }

    /** What a mirror copies of each layer: its own clusters, zero markers included, nothing held below. */
    @Test
    void ownedDescribesOnlyWhatEachLayerHolds() throws Exception {
        final LayeredDevice layers = volume.layers();
        write(0, random(new Random(50), 4 * CLUSTER));
        layers.createSnapshot("base", Instant.EPOCH);
        write(4 * CLUSTER, random(new Random(51), 2 * CLUSTER));
        zero(0, CLUSTER, true);
        layers.createSnapshot("mid", Instant.EPOCH.plusSeconds(1));
        final List<String> base = new ArrayList<>();
        layers.owned("base", 0, 8L * CLUSTER, (length, flags) -> base.add(length / CLUSTER + ":" + flags), 64);
        // The base file: data, then holes that read as zeros with nothing below.
        assertThat(base).containsExactly("4:0", "4:3");
        final List<String> mid = new ArrayList<>();
        layers.owned("mid", 0, 8L * CLUSTER, (length, flags) -> mid.add(length / CLUSTER + ":" + flags), 64);
        assertThat(mid).containsExactly("1:2", "3:1", "2:0", "2:1");
        assertThat(layers.heldClusters("mid")).containsExactly(2L, 1L);
        assertThat(layers.heldClusters("base")).isNull();
        final List<String> active = new ArrayList<>();
        layers.owned(null, 0, 8L * CLUSTER, (length, flags) -> active.add(length / CLUSTER + ":" + flags), 64);
        assertThat(active).containsExactly("8:1");
    }

    /** While a mirror holds the chain, it cannot change; afterwards it can again. */
    @Test
    void aHeldChainRefusesSnapshotRollbackAndDeleteUntilReleased() throws Exception {
        final LayeredDevice layers = volume.layers();
        layers.createSnapshot("s", Instant.EPOCH);
        layers.holdChain("being mirrored to t9:10809");
        assertThatThrownBy(() -> layers.createSnapshot("t", Instant.EPOCH)).isInstanceOf(SnapshotException.class)
            .hasMessageContaining("being mirrored to t9:10809");
        assertThatThrownBy(() -> layers.rollback("s")).hasMessageContaining("being mirrored");
        assertThatThrownBy(() -> layers.deleteSnapshot("s")).hasMessageContaining("being mirrored");
        assertThatThrownBy(() -> layers.holdChain("another")).hasMessageContaining("being mirrored");
        assertThat(layers.snapshots()).hasSize(1);
        layers.releaseChain();
        layers.createSnapshot("t", Instant.EPOCH);
        layers.deleteSnapshot("s");
        assertThat(layers.snapshots()).extracting(LayeredDevice.SnapshotInfo::name).containsExactly("t");
    }

    @FunctionalInterface
    private interface ThrowingRunnable {
        void run() throws Exception;
    }
}
