package io.nbdtail.replication;

import io.nbdtail.layer.LayeredDevice;
import io.nbdtail.storage.BlockDevice;
import io.nbdtail.storage.ExtentSink;
import io.nbdtail.storage.FaultPoints;
import io.nbdtail.storage.StorageException;
import io.nbdtail.volume.Volume;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

/**
 * One live mirror of a source volume to a destination: the copy passes, convergence, the fenced cutover and the
 * retries. See {@code docs/mirroring.md} for the protocol and the state machine.
 *
 * <p>Dirty tracking starts (the {@link WriteGate} is installed) before the first connection, so no change is
 * ever missed. Every chunk starts dirty; a pass takes runs of dirty chunks (clearing their bits before it reads
 * them), asks the volume which parts are data and which read as zeros, and sends writes for the data and zero
 * requests (or, to an empty destination on the first pass, nothing) for the rest, with many requests in flight.
 * A failed request marks its range dirty again. A read error on the source ends the mirror: it never sends what
 * it could not read.
 *
 * <p>After each pass the destination is flushed; what was written since the last successful flush is remembered,
 * so a reconnect to a destination that still holds this session's copy resends only that plus what is dirty.
 *
 * <p>A volume with snapshots is copied by replaying its snapshot tree on the destination (see
 * {@link SnapshotLayer#plan}): for each snapshot, parent first, the destination gets a fresh active layer on the
 * parent, the source sends only the clusters the snapshot's own layer holds, and the destination seals it as
 * that snapshot. Then the live disc: a fresh layer on the active layer's parent, and the passes above, limited to
 * what the active layer holds. Frozen layers never change, so each is copied once; one cut short by a failure is
 * started over, the sealed ones are skipped.
 */
public final class MirrorJob {
    private static final Logger LOG = LoggerFactory.getLogger(MirrorJob.class);

    private final Volume volume;
    private final MirrorSession session;
    private final String destination;
    private final MirrorTarget target;
    private final CutoverHooks hooks;
    private final MirrorConfig config;
    private final DirtyMap dirty;
    private final DirtyMap unflushed;
    private final WriteGate gate;
    private final RateLimiter limiter;
    private final RateMeter meter = new RateMeter();
    private final CompletableFuture<MirrorStatus> done = new CompletableFuture<>();
    private final AtomicLong bytesCopied = new AtomicLong();
    private final AtomicReference<Throwable> attemptError = new AtomicReference<>();
    private final AtomicReference<SourceReadException> sourceError = new AtomicReference<>();
    private final ExecutorService readers = Executors.newVirtualThreadPerTaskExecutor();
    private final Semaphore inFlight;
    private final ArrayBlockingQueue<ByteBuffer> buffers;
    private final Instant started = Instant.now();

    private volatile String state = "connecting";
    private volatile int pass;
    private volatile int attempts;
    private volatile String lastError;
    private volatile String convergence = "normal";
    private volatile long freezeMillis = -1;
    private volatile Instant finished;
    private volatile boolean abortRequested;
    /** Set once the source has recorded "handing over": from then on only the cutover's outcome ends the job. */
    private volatile boolean pastPointOfNoReturn;
    private volatile Boolean forcedResolution;
    private volatile Thread thread;
    private MirrorTarget.Connection connection;
    private boolean firstPass = true;
    /** The source's layers when snapshots travel too, else {@code null}. */
    private final LayeredDevice layers;
    /** What the passes copy: the live disc. */
    private final Source live;
    /** What is being copied now: {@link #live}, or one frozen snapshot layer. */
    private volatile Source source;
    /** Snapshots the destination has sealed for this session. */
    private final Set<String> sealed = ConcurrentHashMap.newKeySet();
    /** Whether the destination's active layer is this session's copy of the live disc (snapshots only). */
    private boolean topStarted;
    /** Whether the destination had never been written when this session first reached it. */
    private boolean destinationEmpty;

    public MirrorJob(final Volume volume, final MirrorSession session, final String destination,
                     final MirrorTarget target, final CutoverHooks hooks, final MirrorConfig config) {
        this.volume = volume;
        this.session = session;
        this.destination = destination;
        this.target = target;
        this.hooks = hooks;
        this.config = config;
        this.dirty = new DirtyMap(session.size(), config.chunkSize);
        this.unflushed = new DirtyMap(session.size(), config.chunkSize);
        this.gate = new WriteGate(dirty);
        this.limiter = new RateLimiter(config.bytesPerSecond);
        this.inFlight = new Semaphore(config.maxInFlight);
        this.buffers = new ArrayBlockingQueue<>(config.maxInFlight);
        for (int i = 0; i < config.maxInFlight; i++) {
            buffers.add(ByteBuffer.allocateDirect(config.maxRequest));
        }
        this.layers = session.layered() ? volume.layers() : null;
        if (session.layered() && layers == null) {
            throw new IllegalArgumentException("session of " + session.volume() + " names snapshots but the volume"
                + " has no layers");
        }
        this.live = layers == null
            ? new Source(volume::allocation, volume::read, true, false, 1)
            : new Source((offset, length, sink, max) -> layers.owned(null, offset, length, sink, max), volume::read,
                true, false, layers.clusterSize());
        this.source = live;
    }

    /**
     * What one phase copies.
     *
     * @param extents   describes a range: data, zeros, {@code HOLE | ZERO} (reads as zeros, nothing there) and,
     *                  for a layer, {@code HOLE} alone (held below: nothing to send).
     * @param reader    reads the bytes to send.
     * @param tracked   the live disc: ranges not sent or failed go back into the dirty map, sent ones into the
     *                  unflushed map; a frozen layer cut short is copied again whole instead.
     * @param skipHoles a frozen layer: {@code HOLE | ZERO} ranges need not be zeroed (the destination is empty).
     * @param alignment runs are widened to this (a layer's cluster), so a cluster is never split between requests
     *                  that would each copy it on write at the destination.
     */
    private record Source(Extents extents, Reader reader, boolean tracked, boolean skipHoles, int alignment) {
    }

    @FunctionalInterface
    private interface Extents {
        long describe(long offset, long length, ExtentSink sink, int maxExtents) throws IOException;
    }

    @FunctionalInterface
    private interface Reader {
        void read(ByteBuffer buffer, long offset) throws StorageException;
    }

    /**
     * Starts dirty tracking, connects, and once the destination accepted, continues in the background.
     *
     * @throws MirrorRefusedException if the destination refused (wrong size, volume, credentials, state).
     * @throws IOException            if it could not be reached; both are final, nothing was changed.
     */
    public void start() throws IOException, InterruptedException {
        if (layers == null) {
            dirty.markAll();
        } else {
            // The live phase marks what the active layer holds when it starts; until then only guest writes count.
            dirty.clear();
        }
        volume.writeObserver(gate);
        try {
            connection = target.connect(session);
        } catch (final IOException | InterruptedException | RuntimeException e) {
            volume.writeObserver(null);
            finish("failed", e.getMessage());
            throw e;
        }
        if (connection.resumable() && layers == null) {
            // Same session after a restart of the job on this server is impossible (the session is new), so a
            // resumable answer here means the destination is confused; start over to be safe.
            dirty.markAll();
        }
        destinationEmpty = connection.empty();
        firstPass = true;
        final Thread t = Thread.ofPlatform().name("mirror-" + session.volume()).daemon().unstarted(this::run);
        thread = t;
        t.start();
    }

    public MirrorSession session() {
        return session;
    }

    public String destination() {
        return destination;
    }

    /** Completes with the final status (moved, failed or aborted). */
    public CompletableFuture<MirrorStatus> done() {
        return done;
    }

    public void rateLimit(final long bytesPerSecond) {
        limiter.limit(bytesPerSecond);
    }

    /**
     * Stops the mirror and leaves the source as it was (serving, not frozen). Refused once the cutover has
     * recorded "handing over": then the outcome is the destination's, see {@link #resolve}.
     *
     * @return whether the abort was accepted.
     */
    public boolean abort() {
        if (pastPointOfNoReturn) {
            return false;
        }
        abortRequested = true;
        final Thread t = thread;
        if (t != null) {
            t.interrupt();
        }
        return true;
    }

    /**
     * Settles a cutover whose outcome is unknown, as the operator (the brain) found it at the destination.
     *
     * @return whether the job was waiting for a resolution.
     */
    public boolean resolve(final boolean moved) {
        if (!state.equals("unknown")) {
            return false;
        }
        forcedResolution = moved;
        final Thread t = thread;
        if (t != null) {
            t.interrupt();
        }
        return true;
    }

    public MirrorStatus status() {
        final long rate = meter.rate();
        final long dirtyBytes = finished != null && state.equals("moved") ? 0 : dirty.dirtyBytes();
        return new MirrorStatus(session.volume(), destination, state, pass, session.size(),
            session.snapshots().size(), sealed.size(), bytesCopied.get(),
            dirtyBytes, rate, rate > 0 ? dirtyBytes / rate : -1, limiter.limit(), attempts, lastError, convergence,
            freezeMillis, session.epoch(), started, finished);
    }

    // ------------------------------------------------------------------------------------------------- the job

    private void run() {
        try {
            while (true) {
                try {
                    if (connection == null) {
                        state = "connecting";
                        connection = target.connect(session);
                        sealed.clear();
                        if (connection.resumable()) {
                            dirty.addAll(unflushed);
                            for (final SnapshotLayer s : connection.sealed()) {
                                sealed.add(checkSealed(s));
                            }
                            LOG.info("mirror {}: destination holds the copy of session {}; resuming with {} bytes"
                                + " dirty{}", session.volume(), session.sessionId(), dirty.dirtyBytes(),
                                layers == null ? "" : " and snapshots " + sealed + " sealed");
                        } else {
                            LOG.info("mirror {}: destination does not hold this session's copy; starting over",
                                session.volume());
                            if (layers == null) {
                                dirty.markAll();
                            }
                            topStarted = false;
                            destinationEmpty = connection.empty();
                            firstPass = true;
                        }
                        unflushed.clear();
                    }
                    if (layers != null) {
                        copySnapshots();
                    }
                    if (copyUntilMoved()) {
                        finish("moved", null);
                        return;
                    }
                } catch (final MirrorRefusedException | SourceReadException e) {
                    throw e;
                } catch (final IOException e) {
                    if (abortRequested) {
                        throw new InterruptedException();
                    }
                    retry(e);
                }
            }
        } catch (final InterruptedException e) {
            cleanUpAfter("aborted", "aborted by request");
        } catch (final SourceReadException e) {
            LOG.error("mirror {}: reading the source failed; the mirror stops (nothing unread is ever sent): {}",
                session.volume(), e.getMessage());
            cleanUpAfter("failed", e.getMessage());
        } catch (final MirrorRefusedException e) {
            LOG.error("mirror {}: the destination refused: {}", session.volume(), e.getMessage());
            cleanUpAfter("failed", e.getMessage());
        } catch (final RuntimeException | Error e) {
            LOG.error("mirror {} failed", session.volume(), e);
            cleanUpAfter("failed", e.toString());
        }
    }

    private void retry(final IOException e) throws InterruptedException, MirrorRefusedException {
        attempts++;
        lastError = e.getMessage();
        closeConnection();
        if (config.maxAttempts > 0 && attempts >= config.maxAttempts) {
            throw new MirrorRefusedException("gave up after " + attempts + " failed attempts; last error: "
                + e.getMessage());
        }
        final long backoff = Math.min(config.backoffMaxMillis, config.backoffMinMillis << Math.min(20, attempts - 1));
        state = "retrying";
        LOG.warn("mirror {}: attempt {} failed ({}); retrying in {} ms", session.volume(), attempts, e.getMessage(),
            backoff);
        Thread.sleep(backoff);
    }

    private void cleanUpAfter(final String finalState, final String error) {
        if (!pastPointOfNoReturn) {
            volume.writeObserver(null);
            gate.unfreeze();
        }
        // Clear an abort's interrupt first, so that closing waits for the requests in flight.
        Thread.interrupted();
        closeConnection();
        finish(finalState, error);
    }

    private void finish(final String finalState, final String error) {
        readers.shutdown();
        if (error != null) {
            lastError = error;
        }
        state = finalState;
        finished = Instant.now();
        done.complete(status());
    }

    private void closeConnection() {
        final MirrorTarget.Connection c = connection;
        connection = null;
        if (c != null) {
            c.close();
        }
        // Requests in flight on the closed connection fail and mark their ranges dirty; wait for that.
        try {
            inFlight.acquire(config.maxInFlight);
            inFlight.release(config.maxInFlight);
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        attemptError.set(null);
    }

    // ------------------------------------------------------------------------------------------- snapshots

    /** A snapshot the destination says it sealed must be the source's, with the same parent and time. */
    private String checkSealed(final SnapshotLayer there) throws MirrorRefusedException {
        for (final SnapshotLayer here : session.snapshots()) {
            if (here.name().equals(there.name())) {
                if (java.util.Objects.equals(here.parent(), there.parent()) && here.created().equals(there.created())) {
                    return here.name();
                }
                break;
            }
        }
        throw new MirrorRefusedException("the destination holds snapshot '" + there.name() + "' (parent "
            + there.parent() + ", created " + there.created() + "), which is not the source's; delete the volume"
            + " there, receive it again and start a new mirror");
    }

    /**
     * Copies every snapshot the destination has not sealed yet, parents first, then gives the destination a
     * fresh active layer for the live disc (unless it already holds this session's copy of it).
     */
    private void copySnapshots() throws IOException, InterruptedException {
        for (final SnapshotLayer snapshot : session.snapshots()) {
            if (!sealed.contains(snapshot.name())) {
                topStarted = false;
                copySnapshot(snapshot);
            }
        }
        if (!topStarted) {
            target.startLayer(session, session.topParent());
            // Everything the active layer holds differs from its parent; guest writes since tracking started are
            // in the dirty map already (and are in clusters the active layer holds).
            long pos = 0;
            while (pos < session.size()) {
                final long at = pos;
                final long[] walked = {0};
                layers.owned(null, at, session.size() - at, (length, flags) -> {
                    if (flags != ExtentSink.HOLE) {
                        dirty.mark(at + walked[0], length);
                    }
                    walked[0] += length;
                }, 1024);
                pos = at + Math.max(walked[0], 1);
            }
            unflushed.clear();
            topStarted = true;
            LOG.info("mirror {}: snapshots sealed at the destination; copying the live disc ({} bytes held by its"
                + " active layer or written since)", session.volume(), dirty.dirtyBytes());
        }
    }

    /** One frozen layer, whole; a failure leaves it for the next attempt to copy again from the start. */
    private void copySnapshot(final SnapshotLayer snapshot) throws IOException, InterruptedException {
        state = "copying";
        target.startLayer(session, snapshot.parent());
        LOG.info("mirror {}: copying snapshot {} (on {})", session.volume(), snapshot.name(),
            snapshot.parent() == null ? "nothing" : snapshot.parent());
        try (BlockDevice view = layers.snapshotView(snapshot.name())) {
            source = new Source((offset, length, sink, max) -> layers.owned(snapshot.name(), offset, length, sink,
                max), view::read, false, destinationEmpty, layers.clusterSize());
            try {
                for (long pos = 0; pos < session.size(); pos += config.maxRun) {
                    checkAttempt();
                    if (abortRequested) {
                        throw new InterruptedException();
                    }
                    sendRun(pos, Math.min(config.maxRun, session.size() - pos), true);
                }
            } finally {
                awaitInFlight();
                source = live;
            }
        }
        checkAttempt();
        flush();
        target.seal(session, snapshot);
        sealed.add(snapshot.name());
        LOG.info("mirror {}: snapshot {} sealed at the destination", session.volume(), snapshot.name());
    }

    /** Copy passes until converged, then the cutover; returns true once moved. */
    private boolean copyUntilMoved() throws IOException, InterruptedException {
        long previousDirty = Long.MAX_VALUE;
        int stalls = 0;
        while (true) {
            state = "copying";
            pass++;
            copyPass(true);
            flush();
            final long left = dirty.dirtyBytes();
            final long rate = Math.max(meter.rate(), 1 << 20);
            final boolean hopeless = convergence.equals("not-converging");
            final long bound = hopeless ? config.maxFreezeCopyMillis : config.convergeMillis;
            if (left <= rate * bound / 1000) {
                if (cutover()) {
                    return true;
                }
                continue;
            }
            stalls = left >= previousDirty * 9 / 10 ? stalls + 1 : 0;
            previousDirty = left;
            if (stalls >= config.stallPassesBeforeThrottle && gate.throttleRate() == 0) {
                gate.throttle(Math.max(config.minThrottleBytesPerSecond, rate / 2));
                convergence = "throttled";
                stalls = 0;
                LOG.info("mirror {}: guest writes outpace the copy ({} bytes dirty after pass {}); throttling what"
                    + " they dirty to {} bytes/s", session.volume(), left, pass, gate.throttleRate());
            } else if (stalls > 0 && gate.throttleRate() > config.minThrottleBytesPerSecond) {
                gate.throttle(Math.max(config.minThrottleBytesPerSecond, gate.throttleRate() / 2));
                LOG.info("mirror {}: still {} bytes dirty after pass {}; throttle down to {} bytes/s",
                    session.volume(), left, pass, gate.throttleRate());
            }
            if (stalls >= config.stallPassesBeforeGivingUp && !hopeless) {
                convergence = "not-converging";
                LOG.warn("mirror {}: not converging even with throttled writes ({} bytes dirty, {} bytes/s); will"
                    + " cut over once the remainder fits {} ms", session.volume(), left, rate,
                    config.maxFreezeCopyMillis);
            }
        }
    }

    /** One sweep over the dirty map; returns when every run taken has been answered. */
    private void copyPass(final boolean limited) throws IOException, InterruptedException {
        long chunk = 0;
        final long maxChunks = Math.max(1, config.maxRun / config.chunkSize);
        try {
            while (true) {
                checkAttempt();
                if (abortRequested && !pastPointOfNoReturn) {
                    throw new InterruptedException();
                }
                final long[] run = dirty.claimRun(chunk, maxChunks);
                if (run == null) {
                    break;
                }
                chunk = dirty.chunkOf(run[0] + run[1] - 1) + 1;
                sendRun(run[0], run[1], limited);
            }
        } finally {
            awaitInFlight();
        }
        firstPass = false;
        checkAttempt();
    }

    private void checkAttempt() throws IOException {
        final SourceReadException read = sourceError.get();
        if (read != null) {
            throw read;
        }
        final Throwable e = attemptError.get();
        if (e != null) {
            throw e instanceof IOException io ? io : new IOException(e.getMessage(), e);
        }
    }

    private void awaitInFlight() throws InterruptedException {
        inFlight.acquire(config.maxInFlight);
        inFlight.release(config.maxInFlight);
    }

    private void sendRun(final long runOffset, final long runLength, final boolean limited)
        throws IOException, InterruptedException {
        final Source src = source;
        final long offset = runOffset / src.alignment() * src.alignment();
        final long end = Math.min(session.size(), (runOffset + runLength + src.alignment() - 1) / src.alignment()
            * src.alignment());
        final boolean skipHoles = src == live ? firstPass && connection.empty() : src.skipHoles();
        long pos = offset;
        try {
            while (pos < end) {
                final long base = pos;
                final List<long[]> extents = new ArrayList<>();
                final long described;
                try {
                    final long[] at = {pos};
                    described = src.extents().describe(pos, end - pos, (len, flags) -> {
                        extents.add(new long[] {at[0], len, flags});
                        at[0] += len;
                    }, 64);
                } catch (final IOException e) {
                    throw new SourceReadException("cannot read the allocation of " + session.volume() + " at " + pos
                        + ": " + e.getMessage(), e);
                }
                for (final long[] extent : extents) {
                    if (layers != null && extent[2] == ExtentSink.HOLE) {
                        // held by a layer below, which the destination has already
                    } else if ((extent[2] & ExtentSink.ZERO) != 0) {
                        if (!(skipHoles && (extent[2] & ExtentSink.HOLE) != 0)) {
                            sendZero(src, extent[0], extent[1]);
                        }
                    } else {
                        sendData(src, extent[0], extent[1], limited);
                    }
                    pos = extent[0] + extent[1];
                }
                pos = base + described;
            }
        } finally {
            if (pos < end && src.tracked()) {
                // Not sent (failure, abort): dirty again, so nothing claimed is ever forgotten.
                dirty.mark(pos, end - pos);
            }
        }
    }

    private void sendZero(final Source src, final long offset, final long length) throws InterruptedException {
        long pos = offset;
        final long end = offset + length;
        while (pos < end) {
            final long len = Math.min(end - pos, 1L << 30);
            inFlight.acquire();
            final long at = pos;
            final CompletableFuture<Void> f;
            try {
                f = connection.zero(at, len);
            } catch (final RuntimeException e) {
                inFlight.release();
                throw e;
            }
            f.whenComplete((v, e) -> completed(src, at, len, e, null));
            pos += len;
        }
    }

    private void sendData(final Source src, final long offset, final long length, final boolean limited)
        throws IOException, InterruptedException {
        long pos = offset;
        final long end = offset + length;
        final MirrorTarget.Connection c = connection;
        while (pos < end) {
            // A failed read or request ends the pass at once, not at the end of the run.
            checkAttempt();
            final int len = (int) Math.min(end - pos, config.maxRequest);
            if (limited) {
                limiter.acquire(len);
            }
            inFlight.acquire();
            final ByteBuffer buffer = buffers.take();
            final long at = pos;
            // Reads run in parallel (the in-flight permits and the buffer pool bound them), so one slow pread
            // does not stall the pipe.
            readers.execute(() -> readAndSend(src, c, at, len, buffer));
            pos += len;
        }
    }

    private void readAndSend(final Source src, final MirrorTarget.Connection c, final long at, final int len,
                             final ByteBuffer buffer) {
        buffer.clear().limit(len);
        try {
            src.reader().read(buffer, at);
        } catch (final StorageException | RuntimeException e) {
            if (src.tracked()) {
                dirty.mark(at, len);
            }
            sourceError.compareAndSet(null, new SourceReadException("cannot read " + session.volume() + " at " + at
                + "+" + len + ": " + e.getMessage(), e));
            buffers.add(buffer);
            inFlight.release();
            return;
        }
        buffer.flip();
        final CompletableFuture<Void> f;
        try {
            f = c.write(at, buffer);
        } catch (final RuntimeException e) {
            completed(src, at, len, e, buffer);
            return;
        }
        f.whenComplete((v, e) -> completed(src, at, len, e, buffer));
    }

    private void completed(final Source src, final long offset, final long length, final Throwable error,
                           final ByteBuffer buffer) {
        if (error != null) {
            if (src.tracked()) {
                dirty.mark(offset, length);
            }
            attemptError.compareAndSet(null, error instanceof CompletionException c
                && c.getCause() != null ? c.getCause() : error);
        } else {
            if (src.tracked()) {
                unflushed.mark(offset, length);
            }
            bytesCopied.addAndGet(length);
            meter.add(length);
        }
        if (buffer != null) {
            buffers.add(buffer);
        }
        inFlight.release();
    }

    private void flush() throws IOException, InterruptedException {
        // Called only with nothing in flight, so everything in the unflushed set is covered by this flush.
        await(connection.flush(), "FLUSH");
        unflushed.clear();
    }

    private void await(final CompletableFuture<?> future, final String what) throws IOException, InterruptedException {
        try {
            future.get(config.requestTimeoutMillis, TimeUnit.MILLISECONDS);
        } catch (final ExecutionException e) {
            final Throwable cause = e.getCause();
            throw cause instanceof IOException io ? io : new IOException(what + " failed: " + cause, cause);
        } catch (final TimeoutException e) {
            throw new IOException(what + " had no answer within " + config.requestTimeoutMillis + " ms");
        }
    }

    // ---------------------------------------------------------------------------------------------- cutover

    /**
     * Freeze, last copy, flush, hand over. Returns true once moved, false if the freeze could not drain (copying
     * resumes). Failures before the destination's record leave the source serving (unfrozen).
     */
    private boolean cutover() throws IOException, InterruptedException {
        state = "cutover";
        final long frozenAt = System.nanoTime();
        if (!gate.freeze(config.freezeDrainMillis)) {
            LOG.warn("mirror {}: writes in flight did not finish within {} ms; copying on", session.volume(),
                config.freezeDrainMillis);
            return false;
        }
        final long epoch = session.epoch() + 1;
        final long drained = System.nanoTime();
        final long lastBytes = dirty.dirtyBytes();
        long copied;
        try {
            // Unlimited: the rate limit is suspended during the freeze, which must be short.
            while (!dirty.isClean()) {
                copyPass(false);
            }
            copied = System.nanoTime();
            flush();
            FaultPoints.hit("source.flushed");
            try {
                hooks.recordHandingOver(epoch, destination);
            } catch (final Exception e) {
                throw new IOException("cannot record the hand-over on the source: " + e.getMessage(), e);
            }
        } catch (final IOException | InterruptedException | RuntimeException e) {
            gate.unfreeze();
            freezeMillis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - frozenAt);
            throw e;
        }
        pastPointOfNoReturn = true;
        final long recorded = System.nanoTime();
        FaultPoints.hit("source.handing-over");
        boolean moved;
        try {
            target.commit(session, epoch);
            moved = true;
        } catch (final MirrorRefusedException e) {
            LOG.error("mirror {}: the destination refused the cutover: {}", session.volume(), e.getMessage());
            lastError = e.getMessage();
            moved = false;
        } catch (final IOException e) {
            LOG.error("mirror {}: no answer to the cutover ({}); the volume stays frozen until the destination"
                + " answers or the operator resolves it", session.volume(), e.getMessage());
            lastError = "cutover outcome unknown: " + e.getMessage();
            moved = awaitResolution(epoch);
        }
        if (!moved) {
            try {
                hooks.recordServing();
            } catch (final Exception e) {
                // Still frozen and still "handing over" on disc: the operator must look.
                state = "unknown";
                lastError = "the destination did not take the volume, but recording that failed: " + e.getMessage();
                throw new MirrorRefusedException(lastError);
            }
            pastPointOfNoReturn = false;
            gate.unfreeze();
            freezeMillis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - frozenAt);
            throw new MirrorRefusedException("the destination did not take the volume; the source serves it again: "
                + lastError);
        }
        FaultPoints.hit("source.committed");
        try {
            hooks.recordMoved(epoch, destination);
        } catch (final Exception e) {
            LOG.error("mirror {}: the destination owns the volume at epoch {}, but recording the move failed: {};"
                + " the source stays fenced", session.volume(), epoch, e.getMessage());
        }
        FaultPoints.hit("source.moved");
        hooks.closeClients();
        gate.fence(new StorageException(StorageException.Kind.VOLUME_FAILED, "volume " + session.volume()
            + " moved to " + destination + " at epoch " + epoch + "; reconnect to its address"));
        freezeMillis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - frozenAt);
        closeConnection();
        LOG.info("mirror {}: moved to {} at epoch {}; guest writes were held for {} ms (drain {} ms, last {} bytes"
            + " {} ms, flush and record {} ms, commit and fence {} ms)", session.volume(), destination, epoch,
            freezeMillis, millis(frozenAt, drained), lastBytes, millis(drained, copied), millis(copied, recorded),
            millis(recorded, System.nanoTime()));
        return true;
    }

    private static long millis(final long fromNanos, final long toNanos) {
        return TimeUnit.NANOSECONDS.toMillis(toNanos - fromNanos);
    }

    private boolean awaitResolution(final long epoch) {
        state = "unknown";
        while (true) {
            final Boolean forced = forcedResolution;
            if (forced != null) {
                LOG.warn("mirror {}: cutover resolved by the operator: {}", session.volume(),
                    forced ? "moved" : "stays on the source");
                return forced;
            }
            try {
                return target.resolve(session, epoch);
            } catch (final IOException e) {
                LOG.warn("mirror {}: the cutover's outcome is still unknown: {}", session.volume(), e.getMessage());
            } catch (final InterruptedException e) {
                // An abort cannot end this state; a forced resolution is read at the top.
                Thread.interrupted();
            }
            try {
                Thread.sleep(config.resolveIntervalMillis);
            } catch (final InterruptedException e) {
                Thread.interrupted();
            }
        }
    }

    /** A read of the source failed: the mirror stops. */
    private static final class SourceReadException extends IOException {
        SourceReadException(final String message, final Throwable cause) {
            super(message, cause);
        }
    }

    /** Bytes per second over the last few whole seconds. */
    private static final class RateMeter {
        private static final int SECONDS = 5;
        private final long[] buckets = new long[SECONDS + 1];
        private long currentSecond = System.nanoTime() / 1_000_000_000L;
        private final long startSecond = currentSecond;

        synchronized void add(final long bytes) {
            advance();
            buckets[(int) (currentSecond % buckets.length)] += bytes;
        }

        synchronized long rate() {
            advance();
            long sum = 0;
            for (int i = 1; i <= SECONDS; i++) {
                sum += buckets[(int) ((currentSecond - i + buckets.length) % buckets.length)];
            }
            final long seconds = Math.min(SECONDS, currentSecond - startSecond);
            if (seconds == 0) {
                return buckets[(int) (currentSecond % buckets.length)];
            }
            return sum / seconds;
        }

        private void advance() {
            final long now = System.nanoTime() / 1_000_000_000L;
            while (currentSecond < now) {
                currentSecond++;
                buckets[(int) (currentSecond % buckets.length)] = 0;
            }
        }
    }
}
