package io.nbdtail.it;

import io.nbdtail.nbd.client.NbdClient;
import io.nbdtail.replication.MirrorJob;
import io.nbdtail.replication.MirrorRefusedException;
import io.nbdtail.replication.MirrorStatus;
import io.nbdtail.server.MirrorService;
import io.nbdtail.server.NbdTail;
import io.nbdtail.server.Ownership;
import io.nbdtail.server.ServerConfig;
import io.nbdtail.testing.FaultyRelay;
import io.netty.buffer.Unpooled;
import io.netty.channel.EventLoopGroup;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * Two servers in this JVM, each on its own data directory: a source and a destination tail. A writer reaches the
 * volume through its own service address, as qemu would, and replays what was in flight when its connection
 * closes (qemu's reconnect-delay).
 */
class MirrorIT {
    private static final long SIZE = 64L << 20;
    private static final String TOKEN = "0123456789abcdef-secret";

    @TempDir
    Path dir;
    NbdTail source;
    NbdTail destination;
    int destinationPort;
    EventLoopGroup group;

    @BeforeEach
    void start() throws Exception {
        source = tail("source");
        source.listen("127.0.0.1", 0);
        destination = tail("destination");
        destinationPort = destination.listen("127.0.0.1", 0).getPort();
        group = NbdClient.newGroup(1);
    }

    @AfterEach
    void stop() throws Exception {
        if (source != null) {
            source.close();
        }
        if (destination != null) {
            destination.close();
        }
        group.shutdownGracefully(0, 1, TimeUnit.SECONDS).sync();
    }

    private NbdTail tail(final String name) throws Exception {
        final ServerConfig config = new ServerConfig();
        config.nbd.eventLoopThreads = 2;
        config.nbd.storageThreads = 4;
        config.nbd.conclude();
        config.mirror.requestTimeoutMillis = 1_500;
        config.mirror.backoffMinMillis = 100;
        config.mirror.backoffMaxMillis = 500;
        return NbdTail.open(dir.resolve(name), config);
    }

    private MirrorService.Request request(final long rate) {
        return new MirrorService.Request("127.0.0.1:" + destinationPort, TOKEN, rate, null);
    }

    private static int freePort(final String host) throws IOException {
        try (ServerSocket socket = new ServerSocket(0, 1, InetAddress.getByName(host))) {
            return socket.getLocalPort();
        }
    }

    private static byte[] dataFile(final NbdTail tail, final String name) throws IOException {
        return Files.readAllBytes(tail.dataDir().resolve("volumes").resolve(name).resolve("data.raw"));
    }

    private static MirrorStatus await(final MirrorJob job) throws Exception {
        return job.done().get(120, TimeUnit.SECONDS);
    }

    private static List<?> snapshotsOf(final NbdTail tail, final String name) {
        try {
            return tail.volumes().snapshots(name);
        } catch (final Exception e) {
            throw new IllegalStateException(e);
        }
    }

    /** Waits for {@code condition} while {@code job} runs; fails with the job's status if it ends first. */
    private static void until(final MirrorJob job, final java.util.function.BooleanSupplier condition)
        throws Exception {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (!condition.getAsBoolean()) {
            assertThat(job.done().isDone()).as("the mirror ended first: %s", job.status()).isFalse();
            assertThat(System.nanoTime()).as("still waiting after 120 s: %s", job.status()).isLessThan(deadline);
            Thread.sleep(10);
        }
    }

    @Test
    void shouldMoveAVolumeUnderAWriterThroughItsOwnAddressWithNoAcknowledgedWriteLost() throws Exception {
        source.volumes().create("vm1", SIZE, null, "", false);
        final byte[] model = new byte[(int) SIZE];
        final Random random = new Random(11);
        final byte[] initial = new byte[8 << 20];
        random.nextBytes(initial);
        source.volumes().export("vm1").volume().write(ByteBuffer.wrap(initial), 16 << 20);
        System.arraycopy(initial, 0, model, 16 << 20, initial.length);
        final String address = "127.0.0.10:" + freePort("127.0.0.10");
        source.addresses().set("vm1", address);
        destination.mirrors().receive("vm1", SIZE, TOKEN, null);

        final AtomicBoolean stop = new AtomicBoolean();
        final AtomicInteger replays = new AtomicInteger();
        final List<CompletableFuture<Long>> writers = new ArrayList<>();
        for (int w = 0; w < 4; w++) {
            writers.add(startWriter(address, w, 4, 0, model, stop, replays));
        }
        Thread.sleep(300);
        final MirrorStatus started = source.mirrors().start("vm1", request(32L << 20));
        assertThat(started.state()).isIn("copying", "connecting");
        final MirrorStatus done = await(source.mirrors().job("vm1"));
        assertThat(done.state()).as("final status %s", done).isEqualTo("moved");
        Thread.sleep(500);
        stop.set(true);
        long acked = 0;
        for (final CompletableFuture<Long> writer : writers) {
            acked += writer.get(60, TimeUnit.SECONDS);
        }
        assertThat(acked).isGreaterThan(0);
        assertThat(done.freezeMillis()).isBetween(0L, 5_000L);
        assertThat(done.epoch()).isZero();
        // The destination serves the volume at epoch 1; the source is fenced.
        assertThat(destination.volumes().ownership("vm1").state()).isEqualTo(Ownership.SERVING);
        assertThat(destination.volumes().ownership("vm1").epoch()).isEqualTo(1);
        assertThat(source.volumes().ownership("vm1").state()).isEqualTo(Ownership.MOVED);
        assertThat(source.volumes().isHeld("vm1")).isTrue();
        assertThatThrownBy(() -> source.volumes().export("vm1").volume().write(ByteBuffer.allocate(512), 0))
            .hasMessageContaining("moved");
        destination.volumes().export("vm1").volume().flusher().syncNow();
        assertThat(Arrays.equals(dataFile(destination, "vm1"), model))
            .as("destination equals every acknowledged write (%d writes, %d replays)", acked, replays.get()).isTrue();

        // A restarted source remembers the move: the volume stays fenced and the address stays with the
        // destination.
        source.close();
        source = tail("source");
        source.listen("127.0.0.1", 0);
        assertThat(source.volumes().ownership("vm1").state()).isEqualTo(Ownership.MOVED);
        assertThat(source.volumes().isHeld("vm1")).isTrue();
        final String[] hostPort = address.split(":");
        try (NbdClient client = connect(new InetSocketAddress(hostPort[0], Integer.parseInt(hostPort[1])))) {
            client.write(0, Unpooled.wrappedBuffer(new byte[] {42}), true).get(10, TimeUnit.SECONDS);
        }
        assertThat(dataFile(destination, "vm1")[0]).isEqualTo((byte) 42);
    }

    /**
     * A writer like qemu with reconnect-delay: one write at a time in its own slots, and a write whose connection
     * closed is sent again on a new connection to the same address until it is acknowledged.
     */
    private CompletableFuture<Long> startWriter(final String address, final int index, final int writers,
                                                final int firstSlot, final byte[] model, final AtomicBoolean stop,
                                                final AtomicInteger replays) {
        final String[] hostPort = address.split(":");
        final InetSocketAddress target = new InetSocketAddress(hostPort[0], Integer.parseInt(hostPort[1]));
        return CompletableFuture.supplyAsync(() -> {
            final Random random = new Random(100 + index);
            long acked = 0;
            NbdClient client = null;
            try {
                while (!stop.get()) {
                    final int slots = (int) (SIZE / 65536) - firstSlot;
                    final int slot = firstSlot + random.nextInt(slots / writers) * writers + index;
                    final byte[] data = new byte[4096 * (1 + random.nextInt(16))];
                    random.nextBytes(data);
                    final long offset = slot * 65536L;
                    int tries = 0;
                    while (true) {
                        try {
                            if (client == null || !client.isOpen()) {
                                client = connect(target);
                            }
                            client.write(offset, Unpooled.wrappedBuffer(data), false).get(30, TimeUnit.SECONDS);
                            break;
                        } catch (final Exception e) {
                            if (++tries > 600) {
                                throw new AssertionError("write never acknowledged after reconnects", e);
                            }
                            if (client != null) {
                                client.abort();
                                client = null;
                            }
                            replays.incrementAndGet();
                            Thread.sleep(50);
                        }
                    }
                    synchronized (model) {
                        System.arraycopy(data, 0, model, (int) offset, data.length);
                    }
                    acked++;
                }
                return acked;
            } catch (final InterruptedException e) {
                throw new AssertionError(e);
            } finally {
                if (client != null) {
                    client.close();
                }
            }
        });
    }

    private NbdClient connect(final InetSocketAddress target) throws Exception {
        final NbdClient.Options options = new NbdClient.Options();
        options.requestTimeoutMillis = 30_000;
        options.connectTimeoutMillis = 2_000;
        return NbdClient.connect(group, target, options);
    }

    @Test
    void shouldRefuseAtOnceWhatTheDestinationCannotTake() throws Exception {
        source.volumes().create("a", SIZE, null, "", false);
        // not receiving at all
        assertThatThrownBy(() -> source.mirrors().start("a", request(0))).isInstanceOf(MirrorRefusedException.class)
            .hasMessageContaining("not receiving");
        // wrong size
        destination.mirrors().receive("a", SIZE * 2, TOKEN, null);
        assertThatThrownBy(() -> source.mirrors().start("a", request(0))).isInstanceOf(MirrorRefusedException.class)
            .hasMessageContaining("size mismatch");
        destination.volumes().delete("a", false);
        // wrong token
        destination.mirrors().receive("a", SIZE, "another-secret-of-16+", null);
        assertThatThrownBy(() -> source.mirrors().start("a", request(0))).isInstanceOf(MirrorRefusedException.class)
            .hasMessageContaining("token");
        // wrong source address
        destination.volumes().delete("a", false);
        destination.mirrors().receive("a", SIZE, TOKEN, "10.9.9.9");
        assertThatThrownBy(() -> source.mirrors().start("a", request(0))).isInstanceOf(MirrorRefusedException.class)
            .hasMessageContaining("not 10.9.9.9");
        // unreachable
        final MirrorService.Request nowhere = new MirrorService.Request("127.0.0.1:" + freePort("127.0.0.1"), TOKEN,
            0, null);
        assertThatThrownBy(() -> source.mirrors().start("a", nowhere)).isInstanceOf(IOException.class)
            .isNotInstanceOf(MirrorRefusedException.class);
        // The source was never touched.
        assertThat(source.volumes().ownership("a").state()).isEqualTo(Ownership.SERVING);
        assertThat(source.volumes().export("a").volume().writeObserver()).isNull();
        // A receiving volume is invisible to ordinary clients.
        assertThatThrownBy(() -> {
            final NbdClient.Options options = new NbdClient.Options();
            options.exportName = "a";
            NbdClient.connect(group, new InetSocketAddress("127.0.0.1", destinationPort), options);
        }).hasMessageContaining("not available");
    }

    /** While a mirror copies the snapshot tree, nothing may change it: create, delete and rollback are refused. */
    @Test
    void shouldRefuseToChangeTheSnapshotsWhileMirroring() throws Exception {
        source.volumes().create("busy", SIZE, null, "", false);
        final byte[] data = new byte[32 << 20];
        new Random(3).nextBytes(data);
        source.volumes().export("busy").volume().write(ByteBuffer.wrap(data), 0);
        source.volumes().createSnapshot("busy", "before");
        destination.mirrors().receive("busy", SIZE, TOKEN, null);
        source.mirrors().start("busy", request(4L << 20));
        final MirrorJob job = source.mirrors().job("busy");
        assertThatThrownBy(() -> source.volumes().createSnapshot("busy", "x")).hasMessageContaining("being mirrored");
        assertThatThrownBy(() -> source.volumes().requireSnapshot("busy", "before"))
            .hasMessageContaining("being mirrored");
        assertThatThrownBy(() -> source.volumes().deleteSnapshot("busy", "before"))
            .hasMessageContaining("being mirrored");
        assertThatThrownBy(() -> source.volumes().rollback("busy", "before")).hasMessageContaining("being mirrored");
        // The layers refuse too, whoever asks.
        assertThatThrownBy(() -> source.volumes().export("busy").volume().layers().deleteSnapshot("before"))
            .hasMessageContaining("being mirrored");
        assertThat(job.abort()).isTrue();
        assertThat(await(job).state()).isEqualTo("aborted");
        source.volumes().createSnapshot("busy", "x");
        assertThat(source.volumes().snapshots("busy")).hasSize(2);
    }

    /**
     * Below 32 MiB: s0 (the base: 8 MiB of data) &lt;- s1 (4 MiB of data, and 2 MiB zeroed over s0's data) &lt;- s2
     * (2 MiB); after a rollback to s1, s3 (2 MiB) on a side branch; the live disc rests on s3 and holds 1 MiB.
     */
    private void buildTree(final String name) throws Exception {
        final io.nbdtail.volume.Volume volume = source.volumes().export(name).volume();
        final Random random = new Random(40);
        final java.util.function.BiConsumer<Long, Integer> write = (offset, length) -> {
            final byte[] data = new byte[length];
            random.nextBytes(data);
            try {
                volume.write(ByteBuffer.wrap(data), offset);
            } catch (final IOException e) {
                throw new IllegalStateException(e);
            }
        };
        write.accept(0L, 8 << 20);
        source.volumes().createSnapshot(name, "s0");
        write.accept(8L << 20, 4 << 20);
        volume.writeZeroes(0, 2 << 20, true, false);
        source.volumes().createSnapshot(name, "s1");
        write.accept(16L << 20, 2 << 20);
        source.volumes().createSnapshot(name, "s2");
        source.volumes().rollback(name, "s1");
        write.accept(20L << 20, 2 << 20);
        source.volumes().createSnapshot(name, "s3");
        write.accept(24L << 20, 1 << 20);
    }

    private static byte[] read(final io.nbdtail.storage.BlockDevice device) throws IOException {
        final ByteBuffer buffer = ByteBuffer.allocateDirect((int) SIZE);
        device.read(buffer, 0);
        final byte[] out = new byte[(int) SIZE];
        buffer.flip().get(out);
        return out;
    }

    private static List<String> depthMap(final io.nbdtail.volume.Volume volume, final long length) throws IOException {
        final List<String> extents = new ArrayList<>();
        long pos = 0;
        while (pos < length) {
            final long[] walked = {0};
            volume.depth(pos, length - pos, (len, depth) -> {
                extents.add(len + "@" + depth);
                walked[0] += len;
            }, 1024);
            pos += Math.max(walked[0], 1);
        }
        return extents;
    }

    /**
     * Every snapshot arrived with its name, parent and creation time, reads byte for byte as at the source, and
     * holds the same clusters (its own layer, not data copied up); the part of the live disc no writer touched has
     * the same allocation depth on both.
     */
    private void assertSameSnapshots(final String name) throws Exception {
        final List<io.nbdtail.layer.LayeredDevice.SnapshotInfo> here = source.volumes().snapshots(name);
        final List<io.nbdtail.layer.LayeredDevice.SnapshotInfo> there = destination.volumes().snapshots(name);
        assertThat(there).extracting(i -> i.name() + " on " + i.parent() + " at " + i.created() + " holding "
            + i.ownedBytes() + (i.inLiveChain() ? " live" : "")).containsExactlyInAnyOrderElementsOf(
            here.stream().map(i -> i.name() + " on " + i.parent() + " at " + i.created() + " holding "
                + i.ownedBytes() + (i.inLiveChain() ? " live" : "")).toList());
        assertThat(here).extracting(io.nbdtail.layer.LayeredDevice.SnapshotInfo::name)
            .containsExactlyInAnyOrder("s0", "s1", "s2", "s3");
        for (final io.nbdtail.layer.LayeredDevice.SnapshotInfo info : here) {
            try (io.nbdtail.storage.BlockDevice a = source.volumes().export(name).volume().layers()
                     .snapshotView(info.name());
                 io.nbdtail.storage.BlockDevice b = destination.volumes().export(name).volume().layers()
                     .snapshotView(info.name())) {
                assertThat(Arrays.equals(read(a), read(b))).as("snapshot %s byte for byte", info.name()).isTrue();
            }
        }
        assertThat(depthMap(destination.volumes().export(name).volume(), 32L << 20))
            .isEqualTo(depthMap(source.volumes().export(name).volume(), 32L << 20));
    }

    @Test
    void shouldMoveASnapshotTreeUnderWritersAndRebuildItOnTheDestination() throws Exception {
        source.volumes().create("tree", SIZE, null, "", false);
        buildTree("tree");
        final byte[] model = read(source.volumes().export("tree").volume().device());
        final String address = "127.0.0.10:" + freePort("127.0.0.10");
        source.addresses().set("tree", address);
        destination.mirrors().receive("tree", SIZE, TOKEN, null);

        final AtomicBoolean stop = new AtomicBoolean();
        final AtomicInteger replays = new AtomicInteger();
        final List<CompletableFuture<Long>> writers = new ArrayList<>();
        for (int w = 0; w < 4; w++) {
            // Above 32 MiB only, so the lower half shows where each layer's clusters landed.
            writers.add(startWriter(address, w, 4, 512, model, stop, replays));
        }
        Thread.sleep(300);
        source.mirrors().start("tree", request(16L << 20));
        final MirrorStatus done = await(source.mirrors().job("tree"));
        assertThat(done.state()).as("final status %s", done).isEqualTo("moved");
        Thread.sleep(500);
        stop.set(true);
        long acked = 0;
        for (final CompletableFuture<Long> writer : writers) {
            acked += writer.get(60, TimeUnit.SECONDS);
        }
        assertThat(acked).isGreaterThan(0);
        assertThat(destination.volumes().ownership("tree").state()).isEqualTo(Ownership.SERVING);
        assertThat(Arrays.equals(read(destination.volumes().export("tree").volume().device()), model))
            .as("live disc equals every acknowledged write (%d writes, %d replays)", acked, replays.get()).isTrue();
        assertSameSnapshots("tree");
        // The destination's chain is as the source's: the live disc on s3, on s1, on s0.
        assertThat(destination.volumes().export("tree").volume().layers().dirtyBitmaps())
            .containsExactly("s0", "s1", "s3");
    }

    @Test
    void shouldStartALayerOverAfterTheLinkBreaksInItAndSkipTheSealedOnes() throws Exception {
        source.volumes().create("tl", SIZE, null, "", false);
        buildTree("tl");
        final byte[] model = read(source.volumes().export("tl").volume().device());
        destination.mirrors().receive("tl", SIZE, TOKEN, null);
        try (FaultyRelay relay = new FaultyRelay(new InetSocketAddress("127.0.0.1", destinationPort))) {
            source.mirrors().start("tl", new MirrorService.Request("127.0.0.1:" + relay.port(), TOKEN, 8L << 20,
                null));
            final MirrorJob job = source.mirrors().job("tl");
            // s0 (8 MiB at 8 MiB/s) is sealed; s1 is on its way.
            until(job, () -> !snapshotsOf(destination, "tl").isEmpty());
            Thread.sleep(200);
            assertThat(destination.volumes().snapshots("tl")).hasSize(1);
            relay.cut();
            while (job.status().attempts() < 1) {
                Thread.sleep(10);
            }
            job.rateLimit(0);
            final MirrorStatus done = await(job);
            assertThat(done.state()).as("final status %s", done).isEqualTo("moved");
            assertThat(done.attempts()).isGreaterThanOrEqualTo(1);
            // The layers and the live disc hold 8 + (4 + 2 zeroed) + 2 + 2 + 1 MiB. s1 may have crossed twice, s0
            // must not have (that would be 27 MiB at least).
            assertThat(done.bytesCopied()).isLessThanOrEqualTo((8L + 2 * (4 + 2) + 2 + 2 + 1) << 20);
        }
        assertThat(Arrays.equals(read(destination.volumes().export("tl").volume().device()), model)).isTrue();
        assertSameSnapshots("tl");
    }

    /** The destination restarts between layers: its sealed snapshots are on its disc, and the retry skips them. */
    @Test
    void shouldResumeASnapshotTreeAfterTheDestinationRestarts() throws Exception {
        source.volumes().create("tr", SIZE, null, "", false);
        buildTree("tr");
        final byte[] model = read(source.volumes().export("tr").volume().device());
        destination.mirrors().receive("tr", SIZE, TOKEN, null);
        source.mirrors().start("tr", request(8L << 20));
        final MirrorJob job = source.mirrors().job("tr");
        until(job, () -> !snapshotsOf(destination, "tr").isEmpty());
        destination.close();
        destination = null;
        until(job, () -> job.status().attempts() > 0);
        destination = tail("destination");
        destination.listen("127.0.0.1", destinationPort);
        assertThat(destination.volumes().snapshots("tr")).extracting(i -> i.name()).contains("s0");
        job.rateLimit(0);
        final MirrorStatus done = await(job);
        assertThat(done.state()).as("final status %s", done).isEqualTo("moved");
        assertThat(done.bytesCopied()).as("s0 not sent again").isLessThanOrEqualTo((8L + 2 * (4 + 2) + 2 + 2 + 1) << 20);
        assertThat(Arrays.equals(read(destination.volumes().export("tr").volume().device()), model)).isTrue();
        assertSameSnapshots("tr");
    }

    /** A destination whose snapshot tree is not the one the source declared refuses the cutover. */
    @Test
    void shouldRefuseTheCutoverWhenTheDestinationsTreeDiffers() throws Exception {
        source.volumes().create("td", SIZE, null, "", false);
        buildTree("td");
        final byte[] live = new byte[16 << 20];
        new Random(41).nextBytes(live);
        source.volumes().export("td").volume().write(ByteBuffer.wrap(live), 32L << 20);
        destination.mirrors().receive("td", SIZE, TOKEN, null);
        source.mirrors().start("td", request(4L << 20));
        final MirrorJob job = source.mirrors().job("td");
        // All four snapshots sealed: the live disc is on its way. Somebody takes a snapshot at the destination.
        until(job, () -> snapshotsOf(destination, "td").size() == 4);
        destination.volumes().export("td").volume().layers().createSnapshot("intruder", java.time.Instant.now());
        job.rateLimit(0);
        final MirrorStatus done = await(job);
        assertThat(done.state()).isEqualTo("failed");
        assertThat(done.lastError()).contains("not the source's");
        assertThat(source.volumes().ownership("td").state()).isEqualTo(Ownership.SERVING);
        assertThat(destination.volumes().ownership("td").state()).isEqualTo(Ownership.RECEIVING);
        // The source serves on, and its snapshots can change again.
        source.volumes().export("td").volume().write(ByteBuffer.wrap(new byte[] {1}), 0);
        source.volumes().createSnapshot("td", "after");
    }

    @Test
    void shouldAbortAndRestartThreeTimesThenSucceed() throws Exception {
        source.volumes().create("b", SIZE, null, "", false);
        final byte[] data = new byte[32 << 20];
        new Random(5).nextBytes(data);
        source.volumes().export("b").volume().write(ByteBuffer.wrap(data), 0);
        destination.mirrors().receive("b", SIZE, TOKEN, null);
        for (int i = 0; i < 3; i++) {
            source.mirrors().start("b", request(8L << 20));
            Thread.sleep(300);
            final MirrorJob job = source.mirrors().job("b");
            assertThatThrownBy(() -> source.volumes().delete("b", false)).hasMessageContaining("being mirrored");
            assertThat(job.abort()).isTrue();
            assertThat(await(job).state()).isEqualTo("aborted");
            assertThat(source.volumes().export("b").volume().writeObserver()).isNull();
            source.volumes().export("b").volume().write(ByteBuffer.wrap(new byte[] {(byte) i}), 7);
            data[7] = (byte) i;
        }
        source.mirrors().start("b", request(0));
        assertThat(await(source.mirrors().job("b")).state()).isEqualTo("moved");
        destination.volumes().export("b").volume().flusher().syncNow();
        assertThat(Arrays.copyOf(dataFile(destination, "b"), data.length)).isEqualTo(data);
    }

    @Test
    void shouldRetryThroughALinkThatBreaksAndResumeFromTheDirtyMap() throws Exception {
        source.volumes().create("r", SIZE, null, "", false);
        final byte[] data = new byte[48 << 20];
        new Random(8).nextBytes(data);
        source.volumes().export("r").volume().write(ByteBuffer.wrap(data), 0);
        destination.mirrors().receive("r", SIZE, TOKEN, null);
        try (FaultyRelay relay = new FaultyRelay(new InetSocketAddress("127.0.0.1", destinationPort))) {
            source.mirrors().start("r", new MirrorService.Request("127.0.0.1:" + relay.port(), TOKEN, 16L << 20,
                null));
            final MirrorJob job = source.mirrors().job("r");
            for (int cut = 1; cut <= 2; cut++) {
                Thread.sleep(700);
                relay.cut();
                while (job.status().attempts() < cut) {
                    Thread.sleep(10);
                }
            }
            job.rateLimit(0);
            final MirrorStatus done = await(job);
            assertThat(done.state()).isEqualTo("moved");
            assertThat(done.attempts()).isGreaterThanOrEqualTo(2);
            assertThat(done.bytesCopied()).as("resumed, not restarted").isLessThan(2L * data.length);
        }
        destination.volumes().export("r").volume().flusher().syncNow();
        assertThat(Arrays.copyOf(dataFile(destination, "r"), data.length)).isEqualTo(data);
    }

    @Test
    void shouldNoticeAPartitionByTimeoutKeepServingAndFinishOnceItHeals() throws Exception {
        source.volumes().create("p", SIZE, null, "", false);
        final byte[] data = new byte[32 << 20];
        new Random(9).nextBytes(data);
        final io.nbdtail.volume.Volume volume = source.volumes().export("p").volume();
        volume.write(ByteBuffer.wrap(data), 0);
        destination.mirrors().receive("p", SIZE, TOKEN, null);
        try (FaultyRelay relay = new FaultyRelay(new InetSocketAddress("127.0.0.1", destinationPort))) {
            source.mirrors().start("p", new MirrorService.Request("127.0.0.1:" + relay.port(), TOKEN, 8L << 20,
                null));
            final MirrorJob job = source.mirrors().job("p");
            Thread.sleep(500);
            relay.blackhole(true);
            // The source's own clients are not affected by the partition: the write completes (and, at the end,
            // is on the destination).
            final byte[] more = new byte[1 << 20];
            new Random(10).nextBytes(more);
            volume.write(ByteBuffer.wrap(more), 40L << 20);
            until(job, () -> job.status().attempts() > 0);
            assertThat(job.status().lastError()).contains("no reply");
            relay.blackhole(false);
            relay.cut();
            job.rateLimit(0);
            assertThat(await(job).state()).isEqualTo("moved");
            destination.volumes().export("p").volume().flusher().syncNow();
            final byte[] copy = dataFile(destination, "p");
            assertThat(Arrays.copyOf(copy, data.length)).isEqualTo(data);
            assertThat(Arrays.copyOfRange(copy, 40 << 20, (40 << 20) + more.length)).isEqualTo(more);
        }
    }

    @Test
    void shouldOverwriteStaleContentLeftByAnEarlierSession() throws Exception {
        source.volumes().create("s", SIZE, null, "", false);
        final io.nbdtail.volume.Volume volume = source.volumes().export("s").volume();
        final byte[] data = new byte[16 << 20];
        new Random(12).nextBytes(data);
        volume.write(ByteBuffer.wrap(data), 0);
        destination.mirrors().receive("s", SIZE, TOKEN, null);
        source.mirrors().start("s", request(8L << 20));
        final MirrorJob first = source.mirrors().job("s");
        while (first.status().bytesCopied() < (4 << 20)) {
            Thread.sleep(10);
        }
        first.abort();
        await(first);
        // The first MiBs reached the destination; now they become a hole on the source.
        assertThat(dataFile(destination, "s")[0]).isEqualTo(data[0]);
        volume.writeZeroes(0, 2 << 20, true, false);
        java.util.Arrays.fill(data, 0, 2 << 20, (byte) 0);
        source.mirrors().start("s", request(0));
        assertThat(await(source.mirrors().job("s")).state()).isEqualTo("moved");
        destination.volumes().export("s").volume().flusher().syncNow();
        assertThat(Arrays.copyOf(dataFile(destination, "s"), data.length)).isEqualTo(data);
    }

    @Test
    void shouldResumeAfterTheDestinationRestarts() throws Exception {
        source.volumes().create("c", SIZE, null, "", false);
        final byte[] data = new byte[48 << 20];
        new Random(6).nextBytes(data);
        source.volumes().export("c").volume().write(ByteBuffer.wrap(data), 0);
        destination.mirrors().receive("c", SIZE, TOKEN, null);
        source.mirrors().start("c", request(16L << 20));
        Thread.sleep(1_000);
        // The destination goes away mid-copy and comes back on the same port.
        destination.close();
        destination = null;
        final MirrorJob job = source.mirrors().job("c");
        until(job, () -> job.status().attempts() > 0);
        assertThat(job.status().state()).isIn("retrying", "connecting");
        destination = tail("destination");
        destination.listen("127.0.0.1", destinationPort);
        job.rateLimit(0);
        final MirrorStatus done = await(job);
        assertThat(done.state()).isEqualTo("moved");
        assertThat(done.attempts()).isGreaterThanOrEqualTo(1);
        // Resumed: far less than twice the data crossed.
        assertThat(done.bytesCopied()).isLessThan(2L * data.length);
        destination.volumes().export("c").volume().flusher().syncNow();
        assertThat(Arrays.copyOf(dataFile(destination, "c"), data.length)).isEqualTo(data);
    }
}
