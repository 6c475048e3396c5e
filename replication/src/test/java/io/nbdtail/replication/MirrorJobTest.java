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

        @Override
        public synchronized Connection connect(final MirrorSession s) throws IOException {
            if (refuseConnect) {
                throw new MirrorRefusedException("size mismatch");
            }
            connects.incrementAndGet();
            final boolean resumable = s.sessionId().equals(session) && !forgetOnReconnect;
            if (forgetOnReconnect && session != null) {
                Arrays.fill(bytes, (byte) 0x77);
            }
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
