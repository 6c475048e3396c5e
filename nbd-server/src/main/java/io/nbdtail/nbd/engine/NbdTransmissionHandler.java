package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.codec.BufferBudget;
import io.nbdtail.nbd.codec.NbdReplies;
import io.nbdtail.nbd.codec.NbdRequestDecoder;
import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.protocol.NbdError;
import io.nbdtail.nbd.protocol.NbdProtocolException;
import io.nbdtail.nbd.protocol.NbdRequest;
import io.nbdtail.volume.Volume;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.EventLoop;
import io.netty.handler.codec.DecoderException;
import io.netty.util.ReferenceCountUtil;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.SocketAddress;
import java.time.Instant;
import java.util.ArrayDeque;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * Serves one connection in the transmission phase.
 *
 * <p>Threads: everything in this class runs on the connection's event loop. Disc I/O runs on the storage
 * executor inside {@link NbdOperation}, which comes back here through {@link #complete}. Replies leave in
 * completion order, not request order; the cookie tells the client which is which. Each reply is one buffer
 * written in one call on the event loop, so replies never interleave on the socket.
 *
 * <p>Back-pressure: at most {@code maxInFlightRequests} requests and {@code maxInFlightBytes} bytes are being
 * served at once. Requests decoded beyond that wait in a queue (they were already read), and the channel stops
 * reading from the socket until the queue drains; the same happens while the socket's outbound buffer is above
 * its high-water mark (a client that does not read its replies). No thread ever blocks.
 *
 * <p>Across connections, {@link VolumeBudget} caps what one volume has in flight, and {@link BufferBudget} the
 * request buffers of the whole server (the decoder counts WRITE payloads in it, this class READ replies); a
 * connection held back by either stops reading the same way. A timer closes a connection whose next request has
 * been arriving for longer than {@code requestTimeoutMillis} (slow-loris), and, if {@code idleTimeoutMillis} is
 * set, one that has been idle that long.
 *
 * <p>Bad requests get an error reply and the connection stays usable; only a broken stream (bad magic, an
 * enormous WRITE) closes it.
 */
public final class NbdTransmissionHandler extends ChannelInboundHandlerAdapter {
    private static final Logger LOG = LoggerFactory.getLogger(NbdTransmissionHandler.class);
    /**
     * READ replies from this size on give their bytes back to the {@link BufferBudget} when the socket has taken
     * them (one listener each); smaller ones when they are queued, which the budget's slack absorbs.
     */
    private static final long LARGE_REPLY = 1 << 20;

    private final NbdServerContext context;
    private final NbdServerConfig config;
    private final NbdSession session;
    private final Export export;
    private final Volume volume;
    private final long size;
    private final ExportStats stats;
    private final Executor storage;
    private final VolumeBudget budget;
    private final BufferBudget buffers;
    private final Runnable buffersFreed = this::roomFreed;
    private final ArrayDeque<NbdOperation> waiting = new ArrayDeque<>();
    private final Runnable flushTask = this::flushReplies;
    private final long openedAtMillis = System.currentTimeMillis();

    private ChannelHandlerContext ctx;
    private String id;
    private int inFlight;
    private long inFlightBytes;
    /** NBD_CMD_DISC seen: requests after it are ignored, the rest are answered, then the socket closes. */
    private boolean disconnecting;
    /** The server is shutting down or handing the volume over: stop reading, answer what was read, close. */
    private boolean draining;
    private boolean closed;
    private boolean flushScheduled;

    private ScheduledFuture<?> timer;
    private NbdRequestDecoder decoder;
    /** The decoder's request count when a partial request was first seen by the timer; -1 when none. */
    private long partialMark = -1;
    private long partialSinceNanos;
    /** The request count when the timer last saw activity, and when; -1 before the first tick. */
    private long idleMark = -1;
    private long idleSinceNanos;

    private long requests;
    private long errors;
    private long bytesRead;
    private long bytesWritten;

    public NbdTransmissionHandler(final NbdServerContext context, final NbdSession session) {
        this.context = context;
        this.config = context.config();
        this.session = session;
        this.export = session.export();
        this.volume = export.volume();
        this.size = export.size();
        this.stats = export.stats();
        this.budget = export.budget();
        this.buffers = context.buffers();
        this.storage = context.storageExecutor();
    }

    NbdSession session() {
        return session;
    }

    NbdServerConfig config() {
        return config;
    }

    Volume volume() {
        return volume;
    }

    ByteBufAllocator alloc() {
        return ctx.alloc();
    }

    EventLoop eventLoop() {
        return ctx.channel().eventLoop();
    }

    /** Requests being served now (dispatched or queued). Read from the event loop only. */
    public int inFlight() {
        return inFlight + waiting.size();
    }

    public long openedAtMillis() {
        return openedAtMillis;
    }

    /** A short id, unique among open connections, for listing and disconnecting. */
    public String id() {
        return id;
    }

    public SocketAddress remoteAddress() {
        return ctx.channel().remoteAddress();
    }

    /** A consistent snapshot of this connection's counters, taken on its event loop. */
    public CompletableFuture<ClientInfo> info() {
        final CompletableFuture<ClientInfo> f = new CompletableFuture<>();
        ctx.executor().execute(() -> f.complete(new ClientInfo(id, session.client(),
            Instant.ofEpochMilli(openedAtMillis), bytesRead, bytesWritten, requests, inFlight + waiting.size())));
        return f;
    }

    /** What {@link #info()} reports. */
    public record ClientInfo(String id, String address, Instant since, long bytesRead, long bytesWritten,
                             long requests, int inFlight) {
    }

    /**
     * Disconnects this client from any thread: requests already read are answered first (see
     * {@link #beginDrain()}).
     */
    public void disconnect() {
        ctx.executor().execute(this::beginDrain);
    }

    /** Closes the connection at once, answered or not; the last resort after a drain timed out. */
    public void forceClose() {
        ctx.channel().close();
    }

    @Override
    public void handlerAdded(final ChannelHandlerContext ctx) {
        this.ctx = ctx;
        this.decoder = ctx.pipeline().get(NbdRequestDecoder.class);
        this.id = export.register(this);
        stats.onConnectionOpened();
        // The handshake checked the export and the access list a moment ago; both can have changed since (a
        // delete, an ACL change). Registering first and checking again closes that window.
        if (id == null || !session.mirror()
            && context.exports().find(export.name(), ctx.channel().remoteAddress()) != export) {
            LOG.info("refusing client={} export={}: the export was deleted or the client is no longer allowed",
                session.client(), export.name());
            closed = true;
            ctx.close();
            return;
        }
        LOG.info("open client={} export={} flags=0x{} structured={} contexts={}", session.client(), export.name(),
            Integer.toHexString(session.transmissionFlags()), session.structuredReplies() ? "yes" : "no",
            session.contexts().stream().map(MetaContext::name).toList());
        if (context.shuttingDown()) {
            beginDrain();
        }
        startTimer();
    }

    private void startTimer() {
        final long timeout = config.requestTimeoutMillis == 0 ? config.idleTimeoutMillis
            : config.idleTimeoutMillis == 0 ? config.requestTimeoutMillis
            : Math.min(config.requestTimeoutMillis, config.idleTimeoutMillis);
        if (timeout == 0) {
            return;
        }
        final long period = Math.max(250, timeout / 4);
        timer = ctx.executor().scheduleAtFixedRate(this::checkTimeouts, period, period, TimeUnit.MILLISECONDS);
    }

    /** On the event loop, a few times per timeout: slow-loris and idle connections. */
    private void checkTimeouts() {
        if (closed || draining || disconnecting) {
            return;
        }
        // The event loop's clock: the system's, or a test's.
        final long now = ctx.executor().ticker().nanoTime();
        // Only while reading: a request stuck because this server stopped reading is back-pressure, not abuse.
        if (config.requestTimeoutMillis > 0 && decoder != null && ctx.channel().config().isAutoRead()
            && decoder.midRequest()) {
            if (partialMark != decoder.decoded()) {
                partialMark = decoder.decoded();
                partialSinceNanos = now;
            } else if (now - partialSinceNanos > TimeUnit.MILLISECONDS.toNanos(config.requestTimeoutMillis)) {
                LOG.info("closing client={} export={}: a request has been arriving for more than {} ms"
                    + " (requestTimeoutMillis)", session.client(), export.name(), config.requestTimeoutMillis);
                closed = true;
                ctx.close();
                return;
            }
        } else {
            partialMark = -1;
        }
        if (config.idleTimeoutMillis == 0) {
            return;
        }
        if (idleMark != requests || inFlight > 0 || !waiting.isEmpty() || (decoder != null && decoder.midRequest())) {
            idleMark = requests;
            idleSinceNanos = now;
        } else if (now - idleSinceNanos > TimeUnit.MILLISECONDS.toNanos(config.idleTimeoutMillis)) {
            LOG.info("closing client={} export={}: idle for more than {} ms (idleTimeoutMillis)", session.client(),
                export.name(), config.idleTimeoutMillis);
            beginDrain();
        }
    }

    /** Called from any thread by {@link VolumeBudget} or {@link BufferBudget} when there is room again. */
    void roomFreed() {
        try {
            ctx.executor().execute(() -> {
                if (!closed) {
                    dispatchWaiting();
                    updateAutoRead();
                }
            });
        } catch (final java.util.concurrent.RejectedExecutionException e) {
            // The event loop is shutting down; the connection is going with it.
        }
    }

    @Override
    public void channelInactive(final ChannelHandlerContext ctx) throws Exception {
        closed = true;
        if (timer != null) {
            timer.cancel(false);
        }
        budget.forget(this);
        buffers.forget(buffersFreed);
        NbdOperation op;
        while ((op = waiting.poll()) != null) {
            op.discard();
        }
        stats.onConnectionClosed();
        if (id != null) {
            export.unregister(id);
        }
        LOG.info("close client={} export={} requests={} errors={} read={} written={} seconds={}", session.client(),
            export.name(), requests, errors, bytesRead, bytesWritten,
            (System.currentTimeMillis() - openedAtMillis) / 1000);
        super.channelInactive(ctx);
    }

    @Override
    public void channelRead(final ChannelHandlerContext ctx, final Object msg) {
        if (!(msg instanceof NbdRequest request)) {
            ReferenceCountUtil.release(msg);
            return;
        }
        if (disconnecting || closed) {
            request.recycle();
            return;
        }
        requests++;
        final NbdCommand command = request.command();
        stats.onRequest(command);
        if (command == NbdCommand.DISC) {
            request.recycle();
            disconnecting = true;
            ctx.channel().config().setAutoRead(false);
            closeWhenIdle();
            return;
        }
        final NbdError error = validate(request, command);
        if (error != null) {
            final String message = describe(request, command, error);
            final long cookie = request.cookie();
            request.recycle();
            replyError(cookie, command, error, message);
            return;
        }
        final NbdOperation op = NbdOperation.newInstance(this, request, command);
        if (waiting.isEmpty() && canDispatch(op)) {
            dispatch(op);
        } else {
            waiting.add(op);
        }
        updateAutoRead();
    }

    /**
     * Checks a request against the spec's rules; {@code null} if it may be served. The order matters only for
     * which error a request with several faults gets.
     */
    private NbdError validate(final NbdRequest request, final NbdCommand command) {
        if (command == NbdCommand.UNKNOWN) {
            return NbdError.EINVAL;
        }
        int valid = command.validFlags();
        if (!session.structuredReplies()) {
            valid &= ~NbdConstants.CMD_FLAG_DF;
        }
        if ((request.flags() & ~valid) != 0) {
            return NbdError.EINVAL;
        }
        if (command.writes() && export.readOnly()) {
            return NbdError.EPERM;
        }
        if (command == NbdCommand.FLUSH) {
            return request.offset() != 0 || request.length() != 0 ? NbdError.EINVAL : null;
        }
        if (request.payloadDropped()) {
            return NbdError.EINVAL;
        }
        final long offset = request.offset();
        final long length = request.length();
        // offset is unsigned 64-bit: compareUnsigned so that 2^63 and above are "past the end", and the
        // subtraction cannot overflow once offset <= size.
        if (Long.compareUnsigned(offset, size) > 0 || length > size - offset) {
            return command == NbdCommand.WRITE || command == NbdCommand.WRITE_ZEROES ? NbdError.ENOSPC
                : NbdError.EINVAL;
        }
        if (command == NbdCommand.READ && length > config.maxPayload) {
            return NbdError.EINVAL;
        }
        if (command == NbdCommand.BLOCK_STATUS && (!session.hasMetaContexts() || length == 0)) {
            return NbdError.EINVAL;
        }
        return null;
    }

    /** The error message for a refused request; built only on this error path. */
    private String describe(final NbdRequest request, final NbdCommand command, final NbdError error) {
        if (command == NbdCommand.UNKNOWN) {
            return "unknown command " + request.type();
        }
        return switch (error) {
            case EPERM -> "export " + export.name() + " is read-only";
            case ENOSPC -> "request ends beyond the export: offset=" + Long.toUnsignedString(request.offset())
                + " length=" + request.length() + " size=" + size;
            default -> {
                if ((request.flags() & ~command.validFlags()) != 0
                    || (!session.structuredReplies() && request.hasFlag(NbdConstants.CMD_FLAG_DF))) {
                    yield "flags 0x" + Integer.toHexString(request.flags()) + " are not valid for " + command;
                }
                if (request.payloadDropped()) {
                    yield "write of " + request.length() + " bytes exceeds the maximum of " + config.maxPayload;
                }
                if (command == NbdCommand.FLUSH) {
                    yield "FLUSH must have offset and length 0";
                }
                if (command == NbdCommand.BLOCK_STATUS && !session.hasMetaContexts()) {
                    yield "no metadata context was negotiated";
                }
                if (command == NbdCommand.READ && request.length() > config.maxPayload) {
                    yield "read of " + request.length() + " bytes exceeds the maximum of " + config.maxPayload;
                }
                yield "request out of range: offset=" + Long.toUnsignedString(request.offset()) + " length="
                    + request.length() + " size=" + size;
            }
        };
    }

    /**
     * Whether {@code op} may start now. A READ that may start takes its reply buffer's bytes from the server's
     * budget here (given back in {@link #complete}); a WRITE's payload was counted by the decoder.
     */
    private boolean canDispatch(final NbdOperation op) {
        if (inFlight > 0) {
            if (!(inFlight < config.maxInFlightRequests && inFlightBytes + op.weight <= config.maxInFlightBytes
                && ctx.channel().isWritable())) {
                return false;
            }
            if (!budget.hasRoom(op.weight, config)) {
                // Register, then look again: a release between the first look and the registration is not missed.
                budget.await(this);
                if (!budget.hasRoom(op.weight, config)) {
                    return false;
                }
            }
        }
        if (op.command() != NbdCommand.READ || buffers.reserveOrWait(op.weight, buffersFreed)) {
            return true;
        }
        if (inFlight == 0 && holdsBuffers()) {
            // Bytes this connection holds itself (WRITE payloads queued behind this READ, or one being read in)
            // would wait for this READ, which would wait for them: take its bytes anyway. The budget is exceeded
            // by one request, and only by a connection that has nothing in flight.
            buffers.forget(buffersFreed);
            buffers.reserve(op.weight);
            return true;
        }
        return false;
    }

    /** Whether this connection holds budget bytes that only its own progress can release. */
    private boolean holdsBuffers() {
        if (decoder != null && decoder.gatheringPayload()) {
            return true;
        }
        for (final NbdOperation queued : waiting) {
            if (queued.request().payload() != null) {
                return true;
            }
        }
        return false;
    }

    private void dispatch(final NbdOperation op) {
        inFlight++;
        inFlightBytes += op.weight;
        budget.acquire(op.weight);
        stats.onDispatched();
        op.prepare(ctx.alloc(), session.structuredReplies(), config.maxReadChunks);
        storage.execute(op);
    }

    /** Called on the event loop when an operation's I/O is done. */
    void complete(final NbdOperation op) {
        inFlight--;
        inFlightBytes -= op.weight;
        budget.release(op.weight);
        // A large READ's reply holds its memory until the socket has taken it; the rest give it back now.
        final long heldUntilSent = op.command() == NbdCommand.READ && !closed && op.error() == null
            && op.weight >= LARGE_REPLY ? op.weight : 0;
        if (op.command() == NbdCommand.READ && heldUntilSent == 0) {
            buffers.release(op.weight);
        }
        stats.onCompleted(op.command(), System.nanoTime() - op.startNanos);
        if (closed) {
            op.discard();
        } else {
            final NbdError error = op.error();
            if (error != null) {
                op.releaseReply();
                replyError(op.request().cookie(), op.command(), error, op.errorMessage());
            } else {
                final ByteBuf reply = op.takeReply();
                if (op.command() == NbdCommand.READ) {
                    bytesRead += op.request().length();
                    stats.onRead(op.request().length());
                } else if (op.command() == NbdCommand.WRITE) {
                    bytesWritten += op.request().length();
                    stats.onWrite(op.request().length());
                }
                if (heldUntilSent > 0) {
                    ctx.write(reply).addListener(f -> buffers.release(heldUntilSent));
                } else {
                    ctx.write(reply != null ? reply : NbdReplies.simple(ctx.alloc(), op.request().cookie(), 0),
                        ctx.voidPromise());
                }
                scheduleFlush();
            }
            op.recycle();
        }
        dispatchWaiting();
        updateAutoRead();
        closeWhenIdle();
    }

    private void dispatchWaiting() {
        NbdOperation next;
        while ((next = waiting.peek()) != null && canDispatch(next)) {
            waiting.poll();
            dispatch(next);
        }
    }

    private void replyError(final long cookie, final NbdCommand command, final NbdError error, final String message) {
        errors++;
        stats.onError(error);
        final ByteBuf reply;
        if (session.structuredReplies() && (command == NbdCommand.READ || command == NbdCommand.BLOCK_STATUS)) {
            reply = NbdReplies.error(ctx.alloc(), cookie, error.code(), message, -1);
        } else {
            reply = NbdReplies.simple(ctx.alloc(), cookie, error.code());
        }
        ctx.write(reply, ctx.voidPromise());
        scheduleFlush();
    }

    /**
     * One flush for all replies completed in a row: completions queued on the event loop before this task runs
     * share its {@code writev}.
     */
    private void scheduleFlush() {
        if (!flushScheduled) {
            flushScheduled = true;
            ctx.executor().execute(flushTask);
        }
    }

    private void flushReplies() {
        flushScheduled = false;
        ctx.flush();
    }

    private void updateAutoRead() {
        final boolean read = !disconnecting && !draining && !closed && waiting.isEmpty()
            && inFlight < config.maxInFlightRequests && inFlightBytes < config.maxInFlightBytes
            && ctx.channel().isWritable() && (decoder == null || !decoder.awaitingBuffer());
        if (ctx.channel().config().isAutoRead() != read) {
            ctx.channel().config().setAutoRead(read);
        }
    }

    @Override
    public void userEventTriggered(final ChannelHandlerContext ctx, final Object evt) throws Exception {
        if (evt == NbdRequestDecoder.BUFFER_AVAILABLE) {
            updateAutoRead();
            return;
        }
        super.userEventTriggered(ctx, evt);
    }

    @Override
    public void channelWritabilityChanged(final ChannelHandlerContext ctx) throws Exception {
        if (ctx.channel().isWritable()) {
            dispatchWaiting();
            updateAutoRead();
        }
        super.channelWritabilityChanged(ctx);
    }

    /**
     * Stops reading new requests; those already read are answered, then the connection closes. Used by a
     * graceful shutdown: qemu's client then reconnects (with {@code reconnect-delay}) and resends whatever was
     * unanswered. Call on the event loop.
     */
    public void beginDrain() {
        if (closed || draining) {
            return;
        }
        draining = true;
        ctx.channel().config().setAutoRead(false);
        closeWhenIdle();
    }

    private void closeWhenIdle() {
        if ((disconnecting || draining) && !closed && inFlight == 0 && waiting.isEmpty()) {
            closed = true;
            ctx.writeAndFlush(Unpooled.EMPTY_BUFFER).addListener(ChannelFutureListener.CLOSE);
        }
    }

    @Override
    public void exceptionCaught(final ChannelHandlerContext ctx, final Throwable cause) {
        final Throwable root = cause instanceof DecoderException && cause.getCause() != null ? cause.getCause() : cause;
        if (root instanceof NbdProtocolException) {
            LOG.info("closing client={} export={}: {}", session.client(), export.name(), root.getMessage());
        } else if (root instanceof IOException) {
            LOG.debug("client={} export={}: {}", session.client(), export.name(), root.toString());
        } else {
            LOG.warn("client={} export={}: unexpected error, closing", session.client(), export.name(), root);
        }
        ctx.close();
    }
}
