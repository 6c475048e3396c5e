package io.nbdtail.replication;

import io.nbdtail.storage.StorageException;
import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeService;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The engine against a real volume and an in-memory destination with injectable failures. */
class MirrorJobTest {
    private static final int SIZE = 32 << 20;

    @TempDir
    Path dir;
    VolumeService service;
    Volume volume;
    ExecutorService io = Executors.newFixedThreadPool(4);
    MemoryTarget target;
    RecordingHooks hooks;

    @BeforeEach
    void setUp() throws Exception {
        service = VolumeService.open(dir);
        service.create("v", SIZE, null, null, false);
        volume = service.openVolume("v", Runnable::run);
        target = new MemoryTarget();
        hooks = new RecordingHooks();
        target.hooks = hooks;
    }

    @AfterEach
    void tearDown() {
        io.shutdownNow();
        volume.close();
    }

    private MirrorJob job(final MirrorConfig config) {
        final MirrorSession session = new MirrorSession("v", volume.metadata().id(), "s1", SIZE, 0);
        return new MirrorJob(volume, session, "dest:1", target, hooks, config);
    }

    private static MirrorConfig fast() {
        final MirrorConfig config = new MirrorConfig();
        config.backoffMinMillis = 10;
        config.backoffMaxMillis = 50;
        config.resolveIntervalMillis = 20;
        config.maxRequest = 256 << 10;
        return config;
    }

    private void write(final long offset, final byte[] data) throws StorageException {
        volume.write(ByteBuffer.wrap(data), offset);
    }

    private byte[] source() throws IOException {
        return Files.readAllBytes(dir.resolve("volumes/v/data.raw"));
    }

    @Test
    void shouldCopyDataSkipHolesOnAnEmptyDestinationAndMove() throws Exception {
        final byte[] data = new byte[3 << 20];
        new Random(1).nextBytes(data);
        write(5 << 20, data);
        final MirrorJob job = job(fast());
        job.start();
        final MirrorStatus status = job.done().get(30, TimeUnit.SECONDS);
        assertThat(status.state()).isEqualTo("moved");
        assertThat(target.bytes).isEqualTo(source());
        // Holes were neither written nor zeroed: only the 3 MiB of data crossed.
        assertThat(target.written.get()).isEqualTo(3 << 20);
        assertThat(target.zeroed.get()).isZero();
        assertThat(hooks.events).containsExactly("handing-over 1", "commit 1", "moved 1", "close-clients");
        assertThat(status.freezeMillis()).isGreaterThanOrEqualTo(0);
        assertThatThrownBy(() -> write(0, new byte[512])).isInstanceOf(StorageException.class)
            .hasMessageContaining("moved");
    }

    @Test
    void shouldNeverLoseAWriteMadeWhileCopying() throws Exception {
        final MirrorConfig config = fast();
        config.bytesPerSecond = 64L << 20;
        final MirrorJob job = job(config);
        final AtomicBoolean stop = new AtomicBoolean();
        final List<long[]> acked = Collections.synchronizedList(new ArrayList<>());
        final CompletableFuture<Void> writer = CompletableFuture.runAsync(() -> {
            final Random random = new Random(7);
            while (!stop.get()) {
                final byte[] block = new byte[4096 * (1 + random.nextInt(16))];
                random.nextBytes(block);
                final long offset = 4096L * random.nextInt((SIZE - block.length) / 4096);
                try {
                    write(offset, block);
                    acked.add(new long[] {offset, block.length});
                } catch (final StorageException e) {
                    return; // moved: the fence refuses further writes
                }
            }
        }, io);
        // The empty volume can move within milliseconds: let the writer be under way first.
        while (acked.isEmpty()) {
            Thread.sleep(1);
        }
        job.start();
        final MirrorStatus status = job.done().get(60, TimeUnit.SECONDS);
        stop.set(true);
        writer.get(10, TimeUnit.SECONDS);
        assertThat(status.state()).isEqualTo("moved");
        assertThat(acked).isNotEmpty();
        assertThat(Arrays.equals(target.bytes, source())).as("destination equals source after the cutover").isTrue();
    }

    @Test
    void shouldRetryAfterALinkFailureAndResumeFromTheDirtyMap() throws Exception {
        final byte[] data = new byte[8 << 20];
        new Random(2).nextBytes(data);
        write(0, data);
        target.failAfterBytes.set(4 << 20);
        final MirrorJob job = job(fast());
        job.start();
        final MirrorStatus status = job.done().get(30, TimeUnit.SECONDS);
        assertThat(status.state()).isEqualTo("moved");
        assertThat(status.attempts()).isEqualTo(1);
        assertThat(status.lastError()).contains("injected");
        assertThat(target.bytes).isEqualTo(source());
        assertThat(target.connects.get()).isEqualTo(2);
    }

    @Test
    void shouldStartOverWhenTheDestinationLostTheCopy() throws Exception {
        final byte[] data = new byte[8 << 20];
        new Random(3).nextBytes(data);
        write(0, data);
        target.failAfterBytes.set(4 << 20);
        target.forgetOnReconnect = true;
        final MirrorJob job = job(fast());
        job.start();
        assertThat(job.done().get(30, TimeUnit.SECONDS).state()).isEqualTo("moved");
        assertThat(target.bytes).isEqualTo(source());
    }

    @Test
    void shouldFailAtOnceWhenTheDestinationRefuses() {
        target.refuseConnect = true;
        final MirrorJob job = job(fast());
        assertThatThrownBy(job::start).isInstanceOf(MirrorRefusedException.class);
        assertThat(job.status().state()).isEqualTo("failed");
        assertThat(hooks.events).isEmpty();
    }

    @Test
    void shouldAbortAndLeaveTheSourceServing() throws Exception {
        final MirrorConfig config = fast();
        config.bytesPerSecond = 1 << 20;
        write(0, new byte[8 << 20]);
        final byte[] data = new byte[8 << 20];
        new Random(4).nextBytes(data);
        write(0, data);
        final MirrorJob job = job(config);
        job.start();
        Thread.sleep(200);
        assertThat(job.abort()).isTrue();
        assertThat(job.done().get(10, TimeUnit.SECONDS).state()).isEqualTo("aborted");
        write(0, new byte[4096]);
        assertThat(hooks.events).isEmpty();
    }

    @Test
    void shouldStayServingWhenTheDestinationRefusesTheCutover() throws Exception {
        target.refuseCommit = true;
        final MirrorJob job = job(fast());
        job.start();
        final MirrorStatus status = job.done().get(30, TimeUnit.SECONDS);
        assertThat(status.state()).isEqualTo("failed");
        assertThat(hooks.events).containsExactly("handing-over 1", "serving");
        write(0, new byte[4096]);
    }

    @Test
    void shouldStayFrozenWhileTheCutoverIsUnknownThenFollowTheDestination() throws Exception {
        target.commitUnknown = true;
        target.resolveUnknownTimes.set(3);
        target.resolveAnswer = true;
        final MirrorJob job = job(fast());
        job.start();
        final MirrorStatus status = job.done().get(30, TimeUnit.SECONDS);
        assertThat(status.state()).isEqualTo("moved");
        assertThat(hooks.events).containsExactly("handing-over 1", "moved 1", "close-clients");
        assertThat(job.abort()).isFalse();
    }

    @Test
    void shouldLetTheOperatorResolveAnUnknownCutover() throws Exception {
        target.commitUnknown = true;
        target.resolveUnknownTimes.set(Integer.MAX_VALUE);
        final MirrorJob job = job(fast());
        job.start();
        while (!job.status().state().equals("unknown")) {
            Thread.sleep(10);
        }
        assertThat(job.abort()).isFalse();
        final CompletableFuture<Void> held = CompletableFuture.runAsync(() -> {
            try {
                write(0, new byte[4096]);
            } catch (final StorageException e) {
                throw new RuntimeException(e);
            }
        }, io);
        Thread.sleep(100);
        assertThat(held).isNotDone();
        assertThat(job.resolve(false)).isTrue();
        assertThat(job.done().get(10, TimeUnit.SECONDS).state()).isEqualTo("failed");
        held.get(5, TimeUnit.SECONDS);
        assertThat(hooks.events).containsExactly("handing-over 1", "serving");
    }

    @Test
    void shouldAbortWhenTheSourceCannotBeRead() throws Exception {
        write(0, new byte[1 << 20]);
        final MirrorConfig config = fast();
        config.bytesPerSecond = 1 << 20;
        final MirrorJob job = job(config);
        final byte[] data = new byte[16 << 20];
        new Random(5).nextBytes(data);
        write(0, data);
        job.start();
        Thread.sleep(100);
        volume.close();
        final MirrorStatus status = job.done().get(10, TimeUnit.SECONDS);
        assertThat(status.state()).isEqualTo("failed");
        assertThat(status.lastError()).contains("cannot read");
        assertThat(target.written.get()).isLessThan(16 << 20);
    }

    @Test
    void shouldThrottleAWriterThatOutpacesTheLink() throws Exception {
        final MirrorConfig config = fast();
        config.bytesPerSecond = 8 << 20;
        config.stallPassesBeforeThrottle = 1;
        final byte[] initial = new byte[16 << 20];
        new Random(8).nextBytes(initial);
        write(0, initial);
        final MirrorJob job = job(config);
        final AtomicBoolean stop = new AtomicBoolean();
        final CompletableFuture<Void> writer = CompletableFuture.runAsync(() -> {
            final Random random = new Random(9);
            final byte[] block = new byte[256 << 10];
            while (!stop.get()) {
                random.nextBytes(block);
                try {
                    write(256L * 1024 * random.nextInt(SIZE / (256 << 10)), block);
                } catch (final StorageException e) {
                    return;
                }
            }
        }, io);
        job.start();
        final MirrorStatus status = job.done().get(120, TimeUnit.SECONDS);
        stop.set(true);
        writer.get(10, TimeUnit.SECONDS);
        assertThat(status.state()).isEqualTo("moved");
        assertThat(status.convergence()).isNotEqualTo("normal");
        assertThat(Arrays.equals(target.bytes, source())).isTrue();
    }

    // ------------------------------------------------------------------------------------------- snapshots

    private static final java.time.Instant T0 = java.time.Instant.parse("2026-01-02T03:04:05.678Z");

    private static byte[] random(final int length, final int seed) {
        final byte[] data = new byte[length];
        new Random(seed).nextBytes(data);
        return data;
    }

    /**
     * A tree: s0 (the base: 4 MiB of data) <- s1 (2 MiB of data, 1 MiB zeroed over s0's data) <- s2 (1 MiB), and
     * after a rollback to s1, s3 (1 MiB) on a side branch; the live disc rests on s3 and holds 512 KiB.
     */
    private void buildTree() throws Exception {
        final io.nbdtail.layer.LayeredDevice layers = volume.layers();
        write(0, random(4 << 20, 30));
        layers.createSnapshot("s0", T0);
        write(4 << 20, random(2 << 20, 31));
        volume.writeZeroes(0, 1 << 20, true, false);
        layers.createSnapshot("s1", T0.plusSeconds(1));
        write(8 << 20, random(1 << 20, 32));
        layers.createSnapshot("s2", T0.plusSeconds(2));
        layers.rollback("s1");
        write(10 << 20, random(1 << 20, 33));
        layers.createSnapshot("s3", T0.plusSeconds(3));
        write(12 << 20, random(512 << 10, 34));
    }

    private MirrorJob layeredJob(final MirrorConfig config) throws Exception {
        final SnapshotLayer.Plan plan = SnapshotLayer.plan(volume.layers());
        final MirrorSession session = new MirrorSession("v", volume.metadata().id(), "s1", SIZE, 0,
            plan.snapshots(), plan.topParent());
        return new MirrorJob(volume, session, "dest:1", target, hooks, config);
    }

    private byte[] read(final io.nbdtail.storage.BlockDevice device) throws StorageException {
        final ByteBuffer buffer = ByteBuffer.allocateDirect(SIZE);
        device.read(buffer, 0);
        final byte[] out = new byte[SIZE];
        buffer.flip().get(out);
        return out;
    }

    private void assertSameTree() throws Exception {
        for (final io.nbdtail.layer.LayeredDevice.SnapshotInfo info : volume.layers().snapshots()) {
            final SnapshotLayer there = target.sealedLayers.get(info.name());
            assertThat(there).as("snapshot %s at the destination", info.name()).isNotNull();
            assertThat(there.parent()).isEqualTo(info.parent());
            assertThat(there.created()).isEqualTo(info.created().toString());
            try (io.nbdtail.storage.BlockDevice view = volume.layers().snapshotView(info.name())) {
                assertThat(Arrays.equals(target.sealedBytes.get(info.name()), read(view)))
                    .as("snapshot %s byte for byte", info.name()).isTrue();
            }
        }
        assertThat(target.sealedLayers.keySet()).containsExactlyInAnyOrder("s0", "s1", "s2", "s3");
        assertThat(target.activeParent).isEqualTo("s3");
        assertThat(Arrays.equals(target.bytes, read(volume.device()))).as("live disc").isTrue();
    }

    @Test
    void shouldReplayTheSnapshotTreeSendingOnlyWhatEachLayerHolds() throws Exception {
        buildTree();
        final SnapshotLayer.Plan plan = SnapshotLayer.plan(volume.layers());
        assertThat(plan.snapshots()).extracting(SnapshotLayer::name).containsExactly("s0", "s1", "s2", "s3");
        assertThat(plan.snapshots().get(1).dataClusters()).isEqualTo(32); // 2 MiB in 64 KiB clusters
        assertThat(plan.snapshots().get(1).zeroClusters()).isEqualTo(16);
        assertThat(plan.topParent()).isEqualTo("s3");
        final MirrorJob job = layeredJob(fast());
        assertThat(job.status().snapshots()).isEqualTo(4);
        assertThat(job.status().snapshotsSealed()).isZero();
        job.start();
        final MirrorStatus done = job.done().get(30, TimeUnit.SECONDS);
        assertThat(done.state()).isEqualTo("moved");
        assertThat(done.snapshotsSealed()).as("the status counts the sealed snapshots").isEqualTo(4);
        assertSameTree();
        assertThat(target.layerEvents).containsExactly("layer null", "seal s0", "layer s0", "seal s1", "layer s1",
            "seal s2", "layer s1", "seal s3", "layer s3");
        // Each layer's own clusters crossed once: no layer's data was sent again above it.
        assertThat(target.written.get()).isEqualTo((4 << 20) + (2 << 20) + (1 << 20) + (1 << 20) + (512 << 10));
        // The zero markers of s1 travelled (they hide s0's data); the holes of the empty destination did not.
        assertThat(target.zeroed.get()).isEqualTo(1 << 20);
    }

    @Test
    void shouldStartACutLayerOverSkipTheSealedOnesAndKeepEveryWrite() throws Exception {
        buildTree();
        // The link fails in s1, after all of s0 (4 MiB) and 1 MiB of s1.
        target.failAfterBytes.set(5 << 20);
        final MirrorConfig config = fast();
        config.bytesPerSecond = 16L << 20;
        final MirrorJob job = layeredJob(config);
        final AtomicBoolean stop = new AtomicBoolean();
        final CompletableFuture<Void> writer = CompletableFuture.runAsync(() -> {
            final Random random = new Random(35);
            while (!stop.get()) {
                final byte[] block = random(4096 * (1 + random.nextInt(16)), random.nextInt());
                final long offset = 4096L * random.nextInt((SIZE - block.length) / 4096);
                try {
                    if (random.nextInt(8) == 0) {
                        volume.writeZeroes(offset, block.length, true, false);
                    } else {
                        write(offset, block);
                    }
                } catch (final StorageException e) {
                    return; // moved
                }
            }
        }, io);
        job.start();
        final MirrorStatus status = job.done().get(60, TimeUnit.SECONDS);
        stop.set(true);
        writer.get(10, TimeUnit.SECONDS);
        assertThat(status.state()).isEqualTo("moved");
        assertThat(status.attempts()).isEqualTo(1);
        assertThat(target.connects.get()).isEqualTo(2);
        // s0 was sealed before the failure and not sent again; s1 started over on s0.
        assertThat(target.layerEvents).containsSubsequence("seal s0", "layer s0", "layer s0", "seal s1");
        assertThat(target.layerEvents.stream().filter("seal s0"::equals)).hasSize(1);
        assertSameTree();
    }

    @Test
    void dirtyMapShouldClaimRunsAndCountChunks() {
        final DirtyMap map = new DirtyMap(1 << 20, 4096);
        map.mark(4096 * 3 + 1, 4096 * 2);
        assertThat(map.dirtyChunks()).isEqualTo(3);
        assertThat(map.claimRun(0, 2)).containsExactly(4096 * 3, 4096 * 2);
        assertThat(map.claimRun(0, 100)).containsExactly(4096 * 5, 4096);
        assertThat(map.claimRun(0, 100)).isNull();
        map.markAll();
        assertThat(map.dirtyBytes()).isEqualTo(1 << 20);
        map.mark(1 << 20, 10);
        assertThat(map.dirtyChunks()).isEqualTo(256);
    }

    /** A destination in memory; failures are switched on by the test. */
    static final class MemoryTarget implements MirrorTarget {
        final byte[] bytes = new byte[SIZE];
        final AtomicLong written = new AtomicLong();
        final AtomicLong zeroed = new AtomicLong();
        final AtomicLong failAfterBytes = new AtomicLong(-1);
        final AtomicInteger connects = new AtomicInteger();
        final AtomicInteger resolveUnknownTimes = new AtomicInteger();
        volatile boolean refuseConnect;
        volatile boolean refuseCommit;
        volatile boolean commitUnknown;
        volatile boolean forgetOnReconnect;
        volatile boolean resolveAnswer;
        String session;
        boolean everWritten;
        /** Snapshot layers: what each sealed snapshot reads as, its record, and what the active layer rests on. */
        final java.util.Map<String, byte[]> sealedBytes = new java.util.HashMap<>();
        final java.util.Map<String, SnapshotLayer> sealedLayers = new java.util.LinkedHashMap<>();
        final List<String> layerEvents = Collections.synchronizedList(new ArrayList<>());
        String activeParent;

        @Override
        public synchronized void startLayer(final MirrorSession s, final String parent) throws IOException {
            if (parent == null) {
                if (!sealedLayers.isEmpty()) {
                    throw new MirrorRefusedException("snapshots here already");
                }
            } else {
                if (!sealedLayers.containsKey(parent)) {
                    throw new MirrorRefusedException("no snapshot " + parent);
                }
                System.arraycopy(sealedBytes.get(parent), 0, bytes, 0, SIZE);
            }
            activeParent = parent;
            layerEvents.add("layer " + parent);
        }

        @Override
        public synchronized void seal(final MirrorSession s, final SnapshotLayer snapshot) throws IOException {
            if (!java.util.Objects.equals(activeParent, snapshot.parent())) {
                throw new MirrorRefusedException("layer rests on " + activeParent);
            }
            sealedBytes.put(snapshot.name(), bytes.clone());
            sealedLayers.put(snapshot.name(), snapshot);
            activeParent = snapshot.name();
            layerEvents.add("seal " + snapshot.name());
        }

        @Override
        public synchronized Connection connect(final MirrorSession s) throws IOException {
            if (refuseConnect) {
                throw new MirrorRefusedException("size mismatch");
            }
            connects.incrementAndGet();
            final boolean resumable = s.sessionId().equals(session) && !forgetOnReconnect;
            if (forgetOnReconnect && session != null) {
                Arrays.fill(bytes, (byte) 0x77);
                sealedBytes.clear();
                sealedLayers.clear();
            }
            final List<SnapshotLayer> sealed = resumable ? List.copyOf(sealedLayers.values()) : List.of();
            final boolean empty = !everWritten && !forgetOnReconnect;
            session = s.sessionId();
            return new Connection() {
                volatile boolean closed;

                @Override
                public boolean resumable() {
                    return resumable;
                }

                @Override
                public boolean empty() {
                    return empty;
                }

                @Override
                public List<SnapshotLayer> sealed() {
                    return sealed;
                }

                @Override
                public CompletableFuture<Void> write(final long offset, final ByteBuffer data) {
                    final int len = data.remaining();
                    if (closed || failAfterBytes.get() >= 0 && written.get() + len > failAfterBytes.get()) {
                        failAfterBytes.set(-1);
                        closed = true;
                        return CompletableFuture.failedFuture(new IOException("injected link failure"));
                    }
                    synchronized (MemoryTarget.this) {
                        everWritten = true;
                        data.get(bytes, (int) offset, len);
                    }
                    written.addAndGet(len);
                    return CompletableFuture.completedFuture(null);
                }

                @Override
                public CompletableFuture<Void> zero(final long offset, final long length) {
                    if (closed) {
                        return CompletableFuture.failedFuture(new IOException("closed"));
                    }
                    synchronized (MemoryTarget.this) {
                        Arrays.fill(bytes, (int) offset, (int) (offset + length), (byte) 0);
                    }
                    zeroed.addAndGet(length);
                    return CompletableFuture.completedFuture(null);
                }

                @Override
                public CompletableFuture<Void> flush() {
                    return closed ? CompletableFuture.failedFuture(new IOException("closed"))
                        : CompletableFuture.completedFuture(null);
                }

                @Override
                public void close() {
                    closed = true;
                }
            };
        }

        @Override
        public void commit(final MirrorSession s, final long epoch) throws IOException {
            if (refuseCommit) {
                throw new MirrorRefusedException("not receiving");
            }
            if (commitUnknown) {
                throw new IOException("connection reset");
            }
            hooksOf(this).events.add("commit " + epoch);
        }

        @Override
        public boolean resolve(final MirrorSession s, final long epoch) throws IOException {
            if (resolveUnknownTimes.getAndDecrement() > 0) {
                throw new IOException("unreachable");
            }
            return resolveAnswer;
        }

        RecordingHooks hooks;
    }

    private static RecordingHooks hooksOf(final MemoryTarget target) {
        return target.hooks;
    }

    static final class RecordingHooks implements CutoverHooks {
        final List<String> events = Collections.synchronizedList(new ArrayList<>());

        @Override
        public void recordHandingOver(final long epoch, final String destination) {
            events.add("handing-over " + epoch);
        }

        @Override
        public void recordServing() {
            events.add("serving");
        }

        @Override
        public void recordMoved(final long epoch, final String destination) {
            events.add("moved " + epoch);
        }

        @Override
        public void closeClients() {
            events.add("close-clients");
        }
    }
}
