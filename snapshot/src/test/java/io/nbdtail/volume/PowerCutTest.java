package io.nbdtail.volume;

import io.nbdtail.layer.Checker;
import io.nbdtail.layer.LayeredDevice;
import io.nbdtail.storage.BlockDevice;
import io.nbdtail.storage.PowerCutRecorder;
import io.nbdtail.storage.StorageException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.function.IntPredicate;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.fail;

/**
 * Power cuts (reliability.md C3): a seeded random workload of writes, FUA writes, zeroes, trims, flushes and
 * snapshot create, delete and rollback runs on a real volume whose file changes {@link PowerCutRecorder} logs.
 * Then, for every sync point (nothing unsynced on the disc) and for random crash states between them (any subset
 * of the unsynced changes, writes torn at 512-byte sectors), the disc's files are built in a fresh data directory
 * and opened with the real code: {@code check} must find no corruption (leaks are allowed), the volume must open,
 * and every sector of the live disc and of every snapshot must read a value the model allows: the value at the last
 * flush or a value written since, never anything else.
 *
 * <p>{@code -Dnbdtail.powercut.states=N} random states per seed (default 80), {@code -Dnbdtail.powercut.seeds=N}
 * seeds (default 1), {@code -Dnbdtail.powercut.seed=S} the first seed, {@code -Dnbdtail.powercut.steps=N} workload
 * steps (default 60); {@code tools/bench/powercut-test.sh} runs thousands.
 *
 * <p>And silently dropped writes (C10): what a disc that acknowledges a synced write and never stores it does, and
 * which of it {@code check} detects.
 */
class PowerCutTest {
    private static final int SECTOR = 512;
    private static final int CLUSTER = LayeredDevice.CLUSTER_SIZE;
    /** 1 GiB: two cluster-map pages, and clusters far enough apart that their states share no map sector. */
    private static final long SIZE = 16384L * CLUSTER;
    /** The workload touches these runs of {@link #REGION} clusters only, so a check reads a few MiB, not 1 GiB. */
    private static final int[] REGION_CLUSTERS = {0, 1000, 2500, 5000, 8000, 11000, 16000, 16380};
    private static final int REGION = 4;
    private static final int REGION_SECTORS = REGION * CLUSTER / SECTOR;
    /** Sectors the model tracks; model sector {@code m} is volume sector {@link #sector}{@code (m)}. */
    private static final int SECTORS = REGION_CLUSTERS.length * REGION_SECTORS;
    private static final long[] ZERO = {0};

    @TempDir
    Path tmp;
    private PowerCutRecorder recorder;
    private VolumeService service;
    private Volume volume;

    @BeforeEach
    void setUp() throws Exception {
        VolumeService.open(tmp.resolve("live")).create("v", SIZE, null, "", false);
        recorder = new PowerCutRecorder(tmp.resolve("live"));
        service = VolumeService.open(tmp.resolve("live"), recorder);
        volume = service.openVolume("v", Runnable::run);
    }

    @AfterEach
    void tearDown() {
        volume.close();
    }

    // ------------------------------------------------------------------------------------------------ the model

    /** One step of the workload: the log range it issued and the sectors it changed (each to a set of tags). */
    private record Step(String what, int start, int end, Map<Integer, long[]> changes, long[][] durable) {
    }

    /** A snapshot: what each sector reads (a set of tags), when it was taken and when deleted. */
    private static final class Snap {
        final long[][] sets;
        int createStart;
        int createEnd;
        int deleteStart = Integer.MAX_VALUE;
        int deleteEnd = Integer.MAX_VALUE;

        Snap(final long[][] sets) {
            this.sets = sets;
        }
    }

    private final List<Step> steps = new ArrayList<>();
    private final Map<String, Snap> snaps = new LinkedHashMap<>();
    private long[][] current = initial();
    private long nextTag = 1;

    private static long sector(final int m) {
        return (long) REGION_CLUSTERS[m / REGION_SECTORS] * (CLUSTER / SECTOR) + m % REGION_SECTORS;
    }

    private static long[][] initial() {
        final long[][] sets = new long[SECTORS][];
        Arrays.fill(sets, ZERO);
        return sets;
    }

    private static long[][] copy(final long[][] sets) {
        return sets.clone(); // the inner arrays are never changed, only replaced
    }

    private static long[] union(final long[] a, final long[] b) {
        return java.util.stream.LongStream.concat(Arrays.stream(a), Arrays.stream(b)).distinct().sorted().toArray();
    }

    /** The 512 bytes sector {@code sector} holds when written by write {@code tag}; tag 0 is zeros. */
    private static void pattern(final long tag, final long sector, final ByteBuffer into) {
        long x = tag * 0x9E3779B97F4A7C15L + sector;
        into.putLong(tag).putLong(sector);
        for (int i = 16; i < SECTOR; i += 8) {
            x ^= x << 13;
            x ^= x >>> 7;
            x ^= x << 17;
            into.putLong(x);
        }
    }

    private interface Action {
        void run() throws Exception;
    }

    private void step(final String what, final Map<Integer, long[]> changes, final boolean durable,
                      final Action action) throws Exception {
        final int start = recorder.size();
        action.run();
        changes.forEach((s, set) -> current[s] = set);
        steps.add(new Step(what, start, recorder.size(), changes, durable ? copy(current) : null));
    }

    private void write(final int sector, final int count) throws Exception {
        final long tag = nextTag++;
        final ByteBuffer data = ByteBuffer.allocateDirect(count * SECTOR);
        final Map<Integer, long[]> changes = new HashMap<>();
        for (int s = sector; s < sector + count; s++) {
            pattern(tag, sector(s), data);
            changes.put(s, new long[] {tag});
        }
        step("write " + count + " sectors at " + sector(sector) + " (tag " + tag + ")", changes, false,
            () -> volume.write(data.flip(), sector(sector) * SECTOR));
    }

    private void zero(final int sector, final int count, final boolean trim) throws Exception {
        final Map<Integer, long[]> changes = new HashMap<>();
        for (int s = sector; s < sector + count; s++) {
            changes.put(s, trim ? union(current[s], ZERO) : ZERO);
        }
        final boolean mayUnmap = sector % 2 == 0;
        step((trim ? "trim " : "zero ") + count + " sectors at " + sector(sector), changes, false, () -> {
            if (trim) {
                volume.discard(sector(sector) * SECTOR, (long) count * SECTOR);
            } else {
                volume.writeZeroes(sector(sector) * SECTOR, (long) count * SECTOR, mayUnmap, false);
            }
        });
    }

    private void flush() throws Exception {
        step("flush", Map.of(), true, () -> {
            final CompletableFuture<StorageException> done = new CompletableFuture<>();
            volume.flush(done::complete);
            final StorageException failure = done.join();
            if (failure != null) {
                throw failure;
            }
        });
    }

    private void snapshot(final String name) throws Exception {
        final Snap snap = new Snap(copy(current));
        snap.createStart = recorder.size();
        step("snapshot " + name, Map.of(), true, () -> volume.layers().createSnapshot(name, Instant.now()));
        snap.createEnd = recorder.size();
        snaps.put(name, snap);
    }

    private void delete(final String name) throws Exception {
        final Snap snap = snaps.get(name);
        snap.deleteStart = recorder.size();
        step("delete " + name, Map.of(), false, () -> volume.layers().deleteSnapshot(name));
        snap.deleteEnd = recorder.size();
    }

    private void rollback(final String name) throws Exception {
        final Snap snap = snaps.get(name);
        final Map<Integer, long[]> changes = new HashMap<>();
        for (int s = 0; s < SECTORS; s++) {
            changes.put(s, snap.sets[s]);
        }
        step("rollback to " + name, changes, true, () -> volume.layers().rollback(name));
    }

    private List<String> liveSnapshots() {
        return snaps.entrySet().stream().filter(e -> e.getValue().deleteStart == Integer.MAX_VALUE)
            .map(Map.Entry::getKey).toList();
    }

    private void randomWorkload(final Random random, final int count) throws Exception {
        int names = 0;
        for (int i = 0; i < count; i++) {
            final int r = random.nextInt(100);
            final int sector = random.nextInt(SECTORS);
            final int max = REGION_SECTORS - sector % REGION_SECTORS;
            final int length = Math.min(max, switch (random.nextInt(4)) {
                case 0 -> 1;
                case 1 -> 8;
                case 2 -> CLUSTER / SECTOR;
                default -> 1 + random.nextInt(3 * CLUSTER / SECTOR);
            });
            final List<String> live = liveSnapshots();
            if (r < 40) {
                write(sector, length);
            } else if (r < 48) {
                write(sector, length);
                flush(); // FUA: the engine answers a FUA write after a sync of the volume
            } else if (r < 56) {
                zero(sector, length, false);
            } else if (r < 64) {
                zero(sector, length, true);
            } else if (r < 76) {
                flush();
            } else if (r < 86 && live.size() < 5) {
                snapshot("s" + names++);
            } else if (r < 93 && !live.isEmpty()) {
                delete(live.get(random.nextInt(live.size())));
            } else if (!live.isEmpty()) {
                rollback(live.get(random.nextInt(live.size())));
            } else {
                write(sector, length);
            }
        }
    }

    /** What each sector of the live disc may read after a power cut with the first {@code cut} changes issued. */
    private long[][] candidates(final int cut) {
        long[][] sets = initial();
        int from = 0;
        for (int i = 0; i < steps.size(); i++) {
            if (steps.get(i).durable() != null && steps.get(i).end() <= cut) {
                sets = steps.get(i).durable();
                from = i + 1;
            }
        }
        sets = copy(sets);
        for (int i = from; i < steps.size() && steps.get(i).start() < cut; i++) {
            for (final Map.Entry<Integer, long[]> c : steps.get(i).changes().entrySet()) {
                sets[c.getKey()] = union(sets[c.getKey()], c.getValue());
            }
        }
        return sets;
    }

    // ------------------------------------------------------------------------------------------------ checks

    /** Every sector of {@code device} holds one of the values its set allows. */
    private static void verify(final BlockDevice device, final long[][] sets, final String what) throws Exception {
        final ByteBuffer all = ByteBuffer.allocateDirect(SECTORS * SECTOR);
        for (int r = 0; r < REGION_CLUSTERS.length; r++) {
            device.read(all.slice(r * REGION_SECTORS * SECTOR, REGION_SECTORS * SECTOR), sector(r * REGION_SECTORS) * SECTOR);
        }
        final ByteBuffer expected = ByteBuffer.allocate(SECTOR);
        for (int s = 0; s < SECTORS; s++) {
            final ByteBuffer got = all.slice(s * SECTOR, SECTOR);
            final long tag = got.getLong(0);
            boolean ok;
            if (tag == 0) {
                ok = got.equals(ByteBuffer.allocate(SECTOR)) && Arrays.binarySearch(sets[s], 0) >= 0;
            } else {
                pattern(tag, sector(s), expected.clear());
                ok = got.equals(expected.flip()) && Arrays.stream(sets[s]).anyMatch(t -> t == tag);
            }
            if (!ok) {
                fail(what + ": sector " + sector(s) + " (offset " + sector(s) * SECTOR + ") reads " + describe(got, sector(s))
                    + "; the model allows tags " + Arrays.toString(sets[s]));
            }
        }
    }

    private static String describe(final ByteBuffer got, final long sector) {
        final long tag = got.getLong(0);
        if (tag == 0 && got.equals(ByteBuffer.allocate(SECTOR))) {
            return "zeros";
        }
        final ByteBuffer expected = ByteBuffer.allocate(SECTOR);
        pattern(tag, sector, expected);
        return got.equals(expected.flip()) ? "tag " + tag : "bytes no write ever wrote there (garbage)";
    }

    private String history(final int cut) {
        return steps.stream().map(s -> "  [" + s.start() + ".." + s.end() + ") " + s.what()
            + (s.start() < cut && cut < s.end() ? "   <-- cut " + cut + " here" : ""))
            .collect(Collectors.joining("\n", "\nworkload:\n", "\n"));
    }

    /**
     * Builds the disc after a cut, checks it and opens it, and compares every sector with the model; with
     * {@code repair}, then runs {@code check --repair} and does it all again.
     */
    private void verifyCrashState(final int cut, final PowerCutRecorder.Chooser chooser, final String label,
                                  final boolean repair) throws Exception {
        final Path image = tmp.resolve("image");
        deleteTree(image);
        recorder.build(image, cut, chooser, i -> false);
        final String what = label + ", cut at change " + cut + " of " + recorder.size();
        try {
            final VolumeService crashed = VolumeService.open(image);
            final Checker.Report report = crashed.check("v", false);
            assertThat(report.corruptions()).as(what + ": check reports corruption").isEmpty();
            openAndVerify(crashed, cut, what, !repair);
            if (repair) {
                final Checker.Report repaired = crashed.check("v", true);
                assertThat(repaired.corruptions()).as(what + ": check --repair reports corruption").isEmpty();
                assertThat(crashed.check("v", false).clean()).as(what + ": check after check --repair").isTrue();
                openAndVerify(crashed, cut, what + ", after check --repair", true);
            }
        } catch (final AssertionError | Exception e) {
            throw new AssertionError(e.getMessage() + history(cut), e);
        }
    }

    /** Opens the crashed volume and compares the live disc and every snapshot with the model. */
    private void openAndVerify(final VolumeService crashed, final int cut, final String what, final boolean writeAfter)
        throws Exception {
        try (Volume opened = crashed.openVolume("v", Runnable::run)) {
            verify(opened.device(), candidates(cut), what + ", live disc");
            final Set<String> present = opened.layers().snapshots().stream()
                .map(LayeredDevice.SnapshotInfo::name).collect(Collectors.toSet());
            for (final Map.Entry<String, Snap> e : snaps.entrySet()) {
                final Snap snap = e.getValue();
                final boolean must = snap.createEnd <= cut && snap.deleteStart >= cut;
                final boolean mustNot = snap.createStart >= cut || snap.deleteEnd <= cut;
                if (must) {
                    assertThat(present).as(what + ": acknowledged snapshot " + e.getKey()).contains(e.getKey());
                }
                if (mustNot) {
                    assertThat(present).as(what + ": snapshot " + e.getKey()).doesNotContain(e.getKey());
                }
                if (present.contains(e.getKey())) {
                    try (BlockDevice view = opened.layers().snapshotView(e.getKey())) {
                        verify(view, snap.sets, what + ", snapshot " + e.getKey());
                    }
                }
            }
            if (writeAfter) { // it opened read-write: one more write and flush must work
                opened.write(ByteBuffer.allocateDirect(SECTOR), 0);
                final CompletableFuture<StorageException> done = new CompletableFuture<>();
                opened.flush(done::complete);
                assertThat(done.join()).as(what + ": a flush after the power cut").isNull();
            }
        }
    }

    private static void deleteTree(final Path root) throws IOException {
        if (Files.exists(root)) {
            try (Stream<Path> walk = Files.walk(root)) {
                for (final Path p : walk.sorted(Comparator.reverseOrder()).toList()) {
                    Files.delete(p);
                }
            }
        }
    }

    private static int property(final String name, final int fallback) {
        return Integer.getInteger("nbdtail.powercut." + name, fallback);
    }

    // ------------------------------------------------------------------------------------------------ C3

    @Test
    void powerCutAtEverySyncPointAndRandomStatesBetweenLosesNothingFlushed() throws Exception {
        final int seed = property("seed", 1);
        final int seeds = property("seeds", 1);
        for (int k = 0; k < seeds; k++) {
            if (k > 0) {
                tearDown();
                deleteTree(tmp);
                Files.createDirectories(tmp);
                steps.clear();
                snaps.clear();
                current = initial();
                setUp();
            }
            runSeed(seed + k);
        }
    }

    @Test
    void powerCutDuringGrowKeepsTheDataAndOneOfTheSizes() throws Exception {
        write(0, 8);
        flush();
        final int growStart = recorder.size();
        service.grow(volume, SIZE + CLUSTER);                   // the file first, then volume.json
        final int growEnd = recorder.size();
        final ByteBuffer data = ByteBuffer.allocateDirect(8 * SECTOR);
        for (int s = 0; s < 8; s++) {
            pattern(99, SIZE / SECTOR + s, data);
        }
        volume.write(data.flip(), SIZE);
        flush();
        final int end = recorder.size();
        for (int cut = 0; cut <= end; cut++) {
            final String what = "grow, cut at change " + cut + " of " + end + " (the grow is " + growStart + ".." + growEnd
                + ")";
            final Path image = tmp.resolve("image");
            deleteTree(image);
            recorder.build(image, cut, PowerCutRecorder.random(new Random(cut)), i -> false);
            final VolumeService crashed = VolumeService.open(image);
            assertThat(crashed.check("v", false).corruptions()).as(what).isEmpty();
            try (Volume opened = crashed.openVolume("v", Runnable::run)) {
                assertThat(opened.size()).as(what).isIn(SIZE, SIZE + CLUSTER);
                if (cut >= growEnd) {
                    assertThat(opened.size()).as(what + ": the grow was acknowledged").isEqualTo(SIZE + CLUSTER);
                    assertThat(opened.metadata().size()).as(what + ": volume.json").isEqualTo(SIZE + CLUSTER);
                }
                final long[][] sets = candidates(cut);
                final ByteBuffer first = ByteBuffer.allocate(SECTOR);
                opened.read(first, 0);
                assertThat(first.getLong(0)).as(what + ": a flushed write").isIn(Arrays.stream(sets[0]).boxed().toArray());
                if (opened.size() > SIZE) {
                    final ByteBuffer grown = ByteBuffer.allocate(SECTOR);
                    opened.read(grown, SIZE);
                    assertThat(grown.getLong(0)).as(what + ": the new range").isIn(cut >= end ? new Object[] {99L}
                        : new Object[] {0L, 99L});
                }
            }
        }
    }

    @Test
    void theLayersDirectoryIsDurableBeforeTheFirstManifestNamesIt() throws Exception {
        write(0, 8);
        snapshot("s0");
        final List<PowerCutRecorder.Op> log = recorder.ops();
        final int lastDirSync = log.size() - 1;                  // the manifest's directory sync
        assertThat(log.get(lastDirSync)).isInstanceOf(PowerCutRecorder.SyncDir.class);
        // The power cut comes just before that sync, and of the unsynced names only the manifest's landed.
        final Path image = tmp.resolve("image");
        recorder.build(image, lastDirSync, new PowerCutRecorder.Chooser() {
            @Override
            public boolean applied(final int index, final PowerCutRecorder.Op op) {
                return op instanceof PowerCutRecorder.Rename
                    || op instanceof PowerCutRecorder.Create c && c.name().equals("manifest.tmp");
            }

            @Override
            public IntPredicate sectors(final int index, final PowerCutRecorder.Write write) {
                return null;
            }
        }, i -> false);
        final VolumeService crashed = VolumeService.open(image);
        assertThat(crashed.check("v", false).corruptions()).isEmpty();
        try (Volume opened = crashed.openVolume("v", Runnable::run)) {
            assertThat(opened.layers().snapshots()).extracting(LayeredDevice.SnapshotInfo::name).containsExactly("s0");
        }
    }

    // ------------------------------------------------------------------------------------------------ C10

    /** The last step's range of the log. */
    private Step last() {
        return steps.getLast();
    }

    /** The changes of {@code step} that match {@code what}, as a drop list. */
    private IntPredicate dropIn(final Step step, final java.util.function.Predicate<PowerCutRecorder.Op> what) {
        final List<PowerCutRecorder.Op> log = recorder.ops();
        return i -> i >= step.start() && i < step.end() && what.test(log.get(i));
    }

    /** The inode the step created under {@code name}. */
    private int created(final Step step, final String suffix) {
        final List<PowerCutRecorder.Op> log = recorder.ops();
        for (int i = step.start(); i < step.end(); i++) {
            if (log.get(i) instanceof PowerCutRecorder.Create c && c.name().endsWith(suffix)) {
                return c.inode();
            }
        }
        throw new AssertionError("the step created no " + suffix);
    }

    /** The disc after a power cut at the end, with the dropped changes missing though synced; checked. */
    private Checker.Report lyingDisc(final IntPredicate dropped) throws Exception {
        volume.close();
        final Path image = tmp.resolve("image");
        deleteTree(image);
        recorder.build(image, recorder.size(), PowerCutRecorder.NOTHING_UNSYNCED, dropped);
        return VolumeService.open(image).check("v", false);
    }

    private long readTag(final int m) throws Exception {
        try (Volume opened = VolumeService.open(tmp.resolve("image")).openVolume("v", Runnable::run)) {
            final ByteBuffer b = ByteBuffer.allocate(8);
            opened.read(b, sector(m) * SECTOR);
            return b.getLong(0);
        }
    }

    private VolumeException.Code openError() {
        try (Volume ignored = VolumeService.open(tmp.resolve("image")).openVolume("v", Runnable::run)) {
            return null;
        } catch (final VolumeException e) {
            return e.code();
        }
    }

    @Test
    void aDroppedDataWriteIsNotDetected() throws Exception {
        write(0, 8);
        flush();
        write(0, 8);
        final Step second = last();
        flush();
        final Checker.Report report = lyingDisc(dropIn(second, op -> op instanceof PowerCutRecorder.Write));
        // Unprotected (docs/snapshots.md): no data checksums, so the flushed write silently reads as the one before.
        assertThat(report.corruptions()).isEmpty();
        assertThat(readTag(0)).isEqualTo(1);
    }

    @Test
    void aDroppedMapPageWriteShowsOnlyAsALeak() throws Exception {
        write(0, 8);
        snapshot("s0");
        write(0, 8);                                             // copy-on-write into the active layer
        flush();
        final Step flushed = last();                             // its writes are the map page's
        final Checker.Report report = lyingDisc(dropIn(flushed, op -> op instanceof PowerCutRecorder.Write));
        // The older copy of the page is valid, so no checksum fails: the cluster falls back to the snapshot's
        // data, and the active layer's copy looks like a crash before a flush (a leak, which repair would free).
        assertThat(report.corruptions()).isEmpty();
        assertThat(report.leaks()).singleElement().asString().contains("the active layer");
        assertThat(readTag(0)).isEqualTo(1);
    }

    @Test
    void aDroppedManifestWriteIsDetected() throws Exception {
        write(0, 8);
        snapshot("s0");
        final int manifest = created(last(), "manifest.tmp");
        final Checker.Report report = lyingDisc(dropIn(last(), op -> op instanceof PowerCutRecorder.Write w
            && w.inode() == manifest));
        assertThat(report.corruptions()).singleElement().asString().contains("manifest");
        assertThat(openError()).isEqualTo(VolumeException.Code.NEEDS_CHECK);
    }

    @Test
    void aDroppedLayerFileNameIsDetected() throws Exception {
        snapshot("s0");
        final Checker.Report report = lyingDisc(dropIn(last(), op -> op instanceof PowerCutRecorder.Create c
            && c.name().endsWith(".map")));
        assertThat(report.corruptions()).singleElement().asString().contains("is missing");
        assertThat(openError()).isEqualTo(VolumeException.Code.NEEDS_CHECK);
    }

    @Test
    void aDroppedManifestRenameLosesTheSnapshotAndShowsOnlyAsLeakedFiles() throws Exception {
        snapshot("s0");
        write(0, 8);
        snapshot("s1");
        final Checker.Report report = lyingDisc(dropIn(last(), op -> op instanceof PowerCutRecorder.Rename));
        // The older manifest is valid: s1 and the active layer made with it are gone, their files unlisted.
        assertThat(report.corruptions()).isEmpty();
        assertThat(report.leaks()).hasSize(3).anySatisfy(l -> assertThat(l).contains(".map", "belongs to no layer"))
            .anySatisfy(l -> assertThat(l).contains(".data", "belongs to no layer"))
            .anySatisfy(l -> assertThat(l).contains("manifest.tmp"));
        try (Volume opened = VolumeService.open(tmp.resolve("image")).openVolume("v", Runnable::run)) {
            assertThat(opened.layers().snapshots()).extracting(LayeredDevice.SnapshotInfo::name).containsExactly("s0");
        }
    }

    private void runSeed(final long seed) throws Exception {
        randomWorkload(new Random(seed), property("steps", 60));
        final List<PowerCutRecorder.Op> log = recorder.ops();
        int syncPoints = 0;
        for (int i = 0; i < log.size(); i++) {
            if (log.get(i) instanceof PowerCutRecorder.Sync || log.get(i) instanceof PowerCutRecorder.SyncDir) {
                verifyCrashState(i + 1, PowerCutRecorder.NOTHING_UNSYNCED, "seed " + seed + ", sync point " + i, false);
                syncPoints++;
            }
        }
        final Random random = new Random(seed * 31 + 7);
        final int states = property("states", 80);
        for (int n = 0; n < states; n++) {
            final int cut = random.nextInt(log.size() + 1);
            final long stateSeed = random.nextLong();
            verifyCrashState(cut, PowerCutRecorder.random(new Random(stateSeed)), "seed " + seed + ", random state "
                + n + " (state seed " + stateSeed + ")", true);
        }
        assertThat(syncPoints).as("sync points replayed").isGreaterThan(10);
    }
}
