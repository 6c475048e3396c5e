package io.nbdtail.bench;

import io.nbdtail.layer.LayeredDevice;
import io.nbdtail.storage.ExtentSink;
import io.nbdtail.storage.StorageException;
import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeService;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Warmup;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

import java.nio.file.Path;
import java.time.Instant;
import java.util.concurrent.TimeUnit;

/**
 * Snapshot layers (issue #3): the cost of reading and writing through a chain of {@code layers} layers on a
 * page-cache-hot 512 MiB volume.
 *
 * <ul>
 *   <li>{@code readOwnedByActive} / {@code writeOwnedByActive}: steady state, the active layer holds every
 *       cluster; should match a plain volume ({@code layers=1}): one owner-map lookup, then the same
 *       {@code pread}/{@code pwrite};</li>
 *   <li>{@code readSpreadOverLayers}: clusters held by different layers of the chain (each read still one
 *       lookup and one {@code pread});</li>
 *   <li>{@code lookup}: {@code base:allocation} of one cluster: the owner-map walk alone, no I/O;</li>
 *   <li>{@code firstWriteAfterSnapshot}: a 4 KiB write to a cluster a snapshot holds: copy-on-write of the
 *       64 KiB cluster (read 60 KiB below, write 64 KiB to the active layer, mark the map). Each iteration starts
 *       by rolling back to the newest snapshot, so every cluster is fresh again.</li>
 * </ul>
 */
@State(Scope.Thread)
public class LayerBenchmark extends BenchmarkBase {
    private static final long SIZE = 512L << 20;
    private static final int BLOCK = 4096;
    private static final int CLUSTER = LayeredDevice.CLUSTER_SIZE;
    /** Clusters in the volume: every first write of a batch meets a fresh cluster. */
    private static final int COW_BATCH = (int) (SIZE / CLUSTER);

    @Param({"1", "6"})
    int layers;

    private Path dir;
    private Volume spread;
    private Volume owned;
    private Volume cow;
    private ByteBuf buf;
    private long address;
    private long offset;
    private long cowOffset;
    private final ExtentSink sink = (length, flags) -> { };

    @Setup(Level.Trial)
    public void setUp() throws Exception {
        dir = BenchFiles.tempDir();
        final VolumeService service = VolumeService.open(dir.resolve("data"));
        buf = PooledByteBufAllocator.DEFAULT.directBuffer(CLUSTER, CLUSTER);
        address = buf.memoryAddress();
        for (int i = 0; i < CLUSTER; i++) {
            buf.setByte(i, i * 31 + 7);
        }
        spread = open(service, "spread");
        owned = open(service, "owned");
        cow = open(service, "cow");
        for (int l = 1; l < layers; l++) {
            spread.layers().createSnapshot("s" + l, Instant.now());
            // every layer takes every layers-th cluster, so neighbouring clusters live in different layers
            for (long c = l; c * CLUSTER < SIZE; c += layers) {
                spread.write(address, CLUSTER, c * CLUSTER);
            }
            owned.layers().createSnapshot("s" + l, Instant.now());
            cow.layers().createSnapshot("s" + l, Instant.now());
        }
        fill(owned);
        if (layers == 1) {
            cow.layers().createSnapshot("s1", Instant.now());
        }
    }

    private Volume open(final VolumeService service, final String name) throws Exception {
        service.create(name, SIZE, null, "", false);
        final Volume v = service.openVolume(name, Runnable::run);
        fill(v);
        return v;
    }

    private void fill(final Volume v) throws StorageException {
        for (long pos = 0; pos < SIZE; pos += CLUSTER) {
            v.write(address, CLUSTER, pos);
        }
    }

    /** Every cluster fresh again: the active layer of {@code cow} is replaced by an empty one. */
    @Setup(Level.Iteration)
    public void freshClusters() throws Exception {
        final String newest = cow.layers().snapshots().getLast().name();
        cow.layers().rollback(newest);
        cowOffset = 0;
    }

    @TearDown(Level.Trial)
    public void tearDown() throws Exception {
        buf.release();
        spread.close();
        owned.close();
        cow.close();
        BenchFiles.delete(dir);
    }

    private long next() {
        final long o = offset;
        offset = (o + 7 * BLOCK) % SIZE;
        return o;
    }

    @Benchmark
    public long readOwnedByActive() throws StorageException {
        final long o = next();
        owned.read(address, BLOCK, o);
        return o;
    }

    @Benchmark
    public long writeOwnedByActive() throws StorageException {
        final long o = next();
        owned.write(address, BLOCK, o);
        return o;
    }

    @Benchmark
    public long readSpreadOverLayers() throws StorageException {
        final long o = next();
        spread.read(address, BLOCK, o);
        return o;
    }

    @Benchmark
    public long lookup() throws StorageException {
        return spread.allocation(next() & -CLUSTER, CLUSTER, sink, 1);
    }

    /** Scored per batch of {@value #COW_BATCH} first writes (one per cluster): divide by the batch for one. */
    @Benchmark
    @BenchmarkMode(Mode.SingleShotTime)
    @OutputTimeUnit(TimeUnit.MICROSECONDS)
    @Warmup(iterations = 3, batchSize = COW_BATCH)
    @Measurement(iterations = 5, batchSize = COW_BATCH)
    public long firstWriteAfterSnapshot() throws StorageException {
        final long o = cowOffset;
        cowOffset = o + CLUSTER;
        cow.write(address, BLOCK, o + BLOCK);
        return o;
    }
}
