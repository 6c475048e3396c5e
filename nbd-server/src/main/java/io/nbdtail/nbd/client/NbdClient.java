package io.nbdtail.nbd.client;

import io.nbdtail.nbd.tls.ClientTls;
import io.netty.bootstrap.Bootstrap;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import io.netty.channel.Channel;
import io.netty.channel.ChannelFuture;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelOption;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.MultiThreadIoEventLoopGroup;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollIoHandler;
import io.netty.channel.epoll.EpollSocketChannel;
import io.netty.channel.nio.NioIoHandler;
import io.netty.channel.socket.nio.NioSocketChannel;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.handler.ssl.SslHandshakeCompletionEvent;
import io.netty.util.ReferenceCountUtil;
import io.netty.util.concurrent.ScheduledFuture;

import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import static io.nbdtail.nbd.protocol.NbdConstants.*;

/**
 * An NBD client on Netty: fixed-newstyle handshake with structured replies, then any number of requests in
 * flight, matched to their replies by cookie. The mirror uses it to write to the destination tail; it speaks
 * plain NBD, so it also works against qemu-nbd and nbdkit.
 *
 * <p>Every request returns a future. A request that the server refuses fails with an {@link NbdClientException}
 * carrying the NBD error; when the connection fails (closed, reset, a request older than the request timeout,
 * a reply that breaks the protocol), the connection is closed and every request in flight fails with errno 0.
 * The client never retries: what to do about a failure is the caller's business.
 *
 * <p>With {@link Options#tls}, NBD_OPT_STARTTLS is the first option and the TLS handshake runs in the pipeline
 * before anything else is sent; a server that refuses STARTTLS fails the connection (never a fallback to
 * plaintext), and so does a TLS handshake that fails.
 *
 * <p>Thread-safe: requests may be sent from any thread; the connection's state lives on its event loop.
 */
public final class NbdClient implements AutoCloseable {
    private static final int CMD_READ = 0;
    private static final int CMD_WRITE = 1;
    private static final int CMD_DISC = 2;
    private static final int CMD_FLUSH = 3;
    private static final int CMD_TRIM = 4;
    private static final int CMD_WRITE_ZEROES = 6;
    /** Longest reply payload this client accepts; a larger length is a broken or hostile server. */
    private static final int MAX_REPLY = 64 << 20;

    /** An extra option sent before GO (for example nbdtail's mirror hello); its reply data is kept. */
    public record ExtraOption(int option, byte[] data) {
    }

    /** How to connect. */
    public static final class Options {
        public String exportName = "";
        public List<ExtraOption> extraOptions = List.of();
        public long connectTimeoutMillis = 15_000;
        /** A request without a reply for this long fails the connection. */
        public long requestTimeoutMillis = 60_000;
        /** Stop after the extra options (send ABORT) instead of going into transmission. */
        public boolean optionsOnly;
        /**
         * TLS: send NBD_OPT_STARTTLS first and do everything else through TLS; {@code null}: plaintext. The server's
         * certificate must name the host of the address connected to.
         */
        public ClientTls tls;
    }

    private final Channel channel;
    private final Handler handler;

    private NbdClient(final Channel channel, final Handler handler) {
        this.channel = channel;
        this.handler = handler;
    }

    /** An event loop group for clients: epoll when available. Shut it down when done. */
    public static EventLoopGroup newGroup(final int threads) {
        return new MultiThreadIoEventLoopGroup(threads, Epoll.isAvailable() ? EpollIoHandler.newFactory()
            : NioIoHandler.newFactory());
    }

    /**
     * Connects and negotiates; returns once the connection is in the transmission phase (or, with
     * {@link Options#optionsOnly}, once the extra options are answered and the connection closed).
     *
     * @throws NbdClientException if the connection or the handshake failed; an option the server refused
     *                            carries its reply type in {@link NbdClientException#optionReply()}.
     */
    public static NbdClient connect(final EventLoopGroup group, final InetSocketAddress address,
                                    final Options options) throws NbdClientException, InterruptedException {
        final Handler handler = new Handler(options, address);
        final Bootstrap bootstrap = new Bootstrap()
            .group(group)
            .channel(Epoll.isAvailable() && isEpoll(group) ? EpollSocketChannel.class : NioSocketChannel.class)
            .option(ChannelOption.ALLOCATOR, PooledByteBufAllocator.DEFAULT)
            .option(ChannelOption.TCP_NODELAY, true)
            .option(ChannelOption.SO_KEEPALIVE, true)
            .option(ChannelOption.CONNECT_TIMEOUT_MILLIS, (int) Math.min(Integer.MAX_VALUE,
                options.connectTimeoutMillis))
            .handler(handler);
        final ChannelFuture connected = bootstrap.connect(address);
        connected.addListener(f -> {
            if (!f.isSuccess()) {
                handler.ready.completeExceptionally(f.cause());
            }
        });
        try {
            handler.ready.get(options.connectTimeoutMillis + options.requestTimeoutMillis, TimeUnit.MILLISECONDS);
        } catch (final ExecutionException e) {
            connected.channel().close();
            throw wrap("cannot connect to " + address, e.getCause());
        } catch (final TimeoutException e) {
            connected.channel().close();
            throw new NbdClientException("no handshake with " + address + " within "
                + (options.connectTimeoutMillis + options.requestTimeoutMillis) + " ms; check that the peer is an"
                + " NBD server and reachable");
        } catch (final InterruptedException e) {
            connected.channel().close();
            throw e;
        }
        return new NbdClient(connected.channel(), handler);
    }

    private static boolean isEpoll(final EventLoopGroup group) {
        return group instanceof MultiThreadIoEventLoopGroup m && m.isIoType(EpollIoHandler.class);
    }

    private static NbdClientException wrap(final String what, final Throwable cause) {
        if (cause instanceof NbdClientException e) {
            return e;
        }
        return new NbdClientException(what + ": " + cause, cause);
    }

    /** The export size the server announced. */
    public long size() {
        return handler.size;
    }

    /** The transmission flags the server announced. */
    public int transmissionFlags() {
        return handler.transmissionFlags;
    }

    /** Whether structured replies were negotiated. */
    public boolean structuredReplies() {
        return handler.structured;
    }

    /** The data of each extra option's non-ACK replies, in order. */
    public List<byte[]> extraReplies() {
        return handler.extraReplies;
    }

    public boolean isOpen() {
        return channel.isActive();
    }

    /** Completes when the connection closes, with the reason if it failed. */
    public CompletableFuture<Void> closed() {
        return handler.closed;
    }

    /** Requests sent and not yet answered. */
    public int inFlight() {
        return handler.inFlight;
    }

    /** Writes {@code data} (this call takes ownership of it) at {@code offset}. */
    public CompletableFuture<Void> write(final long offset, final ByteBuf data, final boolean fua) {
        return send(CMD_WRITE, fua ? CMD_FLAG_FUA : 0, offset, data.readableBytes(), data).thenApply(b -> null);
    }

    /** Reads {@code length} bytes; holes come back as zeros. The caller releases the buffer. */
    public CompletableFuture<ByteBuf> read(final long offset, final int length) {
        return send(CMD_READ, 0, offset, length, null);
    }

    /** Zeroes a range; {@code noHole} asks the server to keep it allocated. At most 4 GiB - 1 at once. */
    public CompletableFuture<Void> writeZeroes(final long offset, final long length, final boolean noHole) {
        return send(CMD_WRITE_ZEROES, noHole ? CMD_FLAG_NO_HOLE : 0, offset, checkLength(length), null)
            .thenApply(b -> null);
    }

    /** Discards a range (contents afterwards are the server's choice). At most 4 GiB - 1 at once. */
    public CompletableFuture<Void> trim(final long offset, final long length) {
        return send(CMD_TRIM, 0, offset, checkLength(length), null).thenApply(b -> null);
    }

    /** Completes once every write answered before this call is durable on the server. */
    public CompletableFuture<Void> flush() {
        return send(CMD_FLUSH, 0, 0, 0, null).thenApply(b -> null);
    }

    private static int checkLength(final long length) {
        if (length < 0 || length > 0xFFFF_FFFFL) {
            throw new IllegalArgumentException("length " + length + " does not fit one request; split it");
        }
        return (int) length;
    }

    private CompletableFuture<ByteBuf> send(final int type, final int flags, final long offset, final int length,
                                            final ByteBuf payload) {
        final Pending pending = new Pending(type, offset, length);
        if (!channel.isActive()) {
            ReferenceCountUtil.release(payload);
            pending.future.completeExceptionally(handler.failure("connection is closed"));
            return pending.future;
        }
        channel.eventLoop().execute(() -> handler.send(pending, flags, payload));
        return pending.future;
    }

    /** Sends DISC (after the requests in flight are answered by the server) and closes. Idempotent. */
    @Override
    public void close() {
        if (channel.isActive() && handler.transmission) {
            channel.eventLoop().execute(handler::disconnect);
            channel.closeFuture().awaitUninterruptibly(5, TimeUnit.SECONDS);
        }
        channel.close().awaitUninterruptibly(5, TimeUnit.SECONDS);
    }

    /** Closes at once; requests in flight fail. */
    public void abort() {
        channel.close().awaitUninterruptibly(5, TimeUnit.SECONDS);
    }

    @Override
    public String toString() {
        return "NbdClient{" + channel.remoteAddress() + '}';
    }

    private static final class Pending {
        final int type;
        final long offset;
        final int length;
        final CompletableFuture<ByteBuf> future = new CompletableFuture<>();
        long cookie;
        long sentNanos;
        /** The read buffer being filled from structured chunks. */
        ByteBuf data;
        NbdClientException error;

        Pending(final int type, final long offset, final int length) {
            this.type = type;
            this.offset = offset;
            this.length = length;
        }
    }

    /** The connection's state machine; everything here runs on the channel's event loop. */
    private static final class Handler extends ByteToMessageDecoder {
        private enum State { GREETING, OPTION_REPLY, TLS_HANDSHAKE, REPLY, DONE }

        private final Options options;
        private final InetSocketAddress address;
        final CompletableFuture<Void> ready = new CompletableFuture<>();
        final CompletableFuture<Void> closed = new CompletableFuture<>();
        final List<byte[]> extraReplies = new ArrayList<>();
        private final ArrayDeque<Integer> optionQueue = new ArrayDeque<>();
        private final Map<Long, Pending> pending = new HashMap<>();
        private ChannelHandlerContext ctx;
        private State state = State.GREETING;
        private long nextCookie = 1;
        private ScheduledFuture<?> timer;
        private String closeReason;
        volatile long size;
        volatile int transmissionFlags;
        volatile boolean structured;
        volatile boolean transmission;
        volatile int inFlight;

        Handler(final Options options, final InetSocketAddress address) {
            this.options = options;
            this.address = address;
        }

        NbdClientException failure(final String why) {
            return new NbdClientException(closeReason != null ? closeReason : why);
        }

        @Override
        public void handlerAdded(final ChannelHandlerContext ctx) {
            this.ctx = ctx;
        }

        @Override
        public void channelActive(final ChannelHandlerContext ctx) throws Exception {
            timer = ctx.executor().scheduleAtFixedRate(this::checkTimeouts, 1, 1, TimeUnit.SECONDS);
            super.channelActive(ctx);
        }

        @Override
        public void channelInactive(final ChannelHandlerContext ctx) throws Exception {
            if (timer != null) {
                timer.cancel(false);
            }
            state = State.DONE;
            final NbdClientException e = failure("connection to " + ctx.channel().remoteAddress() + " closed");
            ready.completeExceptionally(e);
            failAll(e);
            if (closeReason != null) {
                closed.completeExceptionally(e);
            } else {
                closed.complete(null);
            }
            super.channelInactive(ctx);
        }

        @Override
        public void exceptionCaught(final ChannelHandlerContext ctx, final Throwable cause) {
            if (!ready.isDone() && options.tls != null && tlsCause(cause) != null) {
                // In TLS 1.3 the server checks our certificate after our side has finished the handshake: its
                // refusal arrives as an alert while the options are under way.
                tlsFailed(cause);
                return;
            }
            fail(ctx, "connection to " + ctx.channel().remoteAddress() + " failed: " + cause);
        }

        /** The TLS failure in {@code cause}'s chain (the JDK's or Bouncy Castle's), or {@code null}. */
        private static Throwable tlsCause(final Throwable cause) {
            for (Throwable t = cause; t != null; t = t.getCause()) {
                if (t instanceof javax.net.ssl.SSLException || t instanceof org.bouncycastle.tls.TlsException) {
                    return t;
                }
            }
            return null;
        }

        private void tlsFailed(final Throwable cause) {
            final Throwable tls = tlsCause(cause);
            final NbdClientException e = new NbdClientException("TLS with " + peer() + " failed (" + options.tls
                + "): " + (tls != null ? tls.getMessage() : cause.toString()) + "; check that its certificate is"
                + " signed by our ca-cert.pem and names the host connected to, and that it accepts our certificate"
                + " or PSK identity", cause, true);
            if (closeReason == null) {
                closeReason = e.getMessage();
            }
            ready.completeExceptionally(e);
            state = State.DONE;
            ctx.close();
        }

        private void fail(final ChannelHandlerContext ctx, final String why) {
            if (closeReason == null) {
                closeReason = why;
            }
            state = State.DONE;
            ctx.close();
        }

        private void failAll(final NbdClientException e) {
            final List<Pending> all = new ArrayList<>(pending.values());
            pending.clear();
            inFlight = 0;
            for (final Pending p : all) {
                ReferenceCountUtil.release(p.data);
                p.data = null;
                p.future.completeExceptionally(e);
            }
        }

        private void checkTimeouts() {
            final long limit = System.nanoTime() - TimeUnit.MILLISECONDS.toNanos(options.requestTimeoutMillis);
            for (final Pending p : pending.values()) {
                if (p.sentNanos - limit < 0) {
                    fail(ctx, "no reply from " + ctx.channel().remoteAddress() + " within "
                        + options.requestTimeoutMillis + " ms");
                    return;
                }
            }
        }

        void send(final Pending p, final int flags, final ByteBuf payload) {
            if (state != State.REPLY || !ctx.channel().isActive()) {
                ReferenceCountUtil.release(payload);
                p.future.completeExceptionally(failure("connection is closed"));
                return;
            }
            p.cookie = nextCookie++;
            p.sentNanos = System.nanoTime();
            pending.put(p.cookie, p);
            inFlight = pending.size();
            final ByteBuf header = ctx.alloc().buffer(REQUEST_LENGTH);
            header.writeInt(REQUEST_MAGIC).writeShort(flags).writeShort(p.type).writeLong(p.cookie)
                .writeLong(p.offset).writeInt(p.length);
            if (payload != null) {
                ctx.write(header, ctx.voidPromise());
                ctx.writeAndFlush(payload, ctx.voidPromise());
            } else {
                ctx.writeAndFlush(header, ctx.voidPromise());
            }
        }

        void disconnect() {
            if (state == State.REPLY && ctx.channel().isActive()) {
                final ByteBuf header = ctx.alloc().buffer(REQUEST_LENGTH);
                header.writeInt(REQUEST_MAGIC).writeShort(0).writeShort(CMD_DISC).writeLong(0).writeLong(0)
                    .writeInt(0);
                ctx.writeAndFlush(header).addListener(f -> ctx.close());
            }
        }

        // ------------------------------------------------------------------------------------------ handshake

        private void option(final int option, final byte[] data) {
            final ByteBuf b = ctx.alloc().buffer(OPTION_HEADER_LENGTH + data.length);
            b.writeLong(IHAVEOPT).writeInt(option).writeInt(data.length).writeBytes(data);
            ctx.writeAndFlush(b, ctx.voidPromise());
            optionQueue.add(option);
        }

        /** Sends the next option of the handshake; options go one at a time, so every reply is for the head. */
        private void sendNextOption() {
            optionQueue.poll();
            currentExtra = false;
            if (extraSent < options.extraOptions.size()) {
                final ExtraOption extra = options.extraOptions.get(extraSent++);
                currentExtra = true;
                option(extra.option(), extra.data());
            } else if (options.optionsOnly) {
                option(OPT_ABORT, new byte[0]);
                state = State.DONE;
                ready.complete(null);
                ctx.close();
            } else if (!structuredAsked) {
                structuredAsked = true;
                option(OPT_STRUCTURED_REPLY, new byte[0]);
            } else {
                final byte[] name = options.exportName.getBytes(StandardCharsets.UTF_8);
                final ByteBuf go = ctx.alloc().heapBuffer(4 + name.length + 2);
                go.writeInt(name.length).writeBytes(name).writeShort(0);
                final byte[] bytes = new byte[go.readableBytes()];
                go.readBytes(bytes);
                go.release();
                option(OPT_GO, bytes);
            }
        }

        private int extraSent;
        private boolean currentExtra;
        private boolean structuredAsked;

        @Override
        protected void decode(final ChannelHandlerContext ctx, final ByteBuf in, final List<Object> out) {
            while (state != State.DONE && decodeOne(in)) {
                // keep going while complete messages are buffered
            }
            if (state == State.DONE) {
                in.skipBytes(in.readableBytes());
            }
        }

        private boolean decodeOne(final ByteBuf in) {
            switch (state) {
                case GREETING -> {
                    if (in.readableBytes() < GREETING_LENGTH) {
                        return false;
                    }
                    final long magic = in.readLong();
                    final long opt = in.readLong();
                    final int flags = in.readUnsignedShort();
                    if (magic != NBDMAGIC || opt != IHAVEOPT || (flags & FLAG_FIXED_NEWSTYLE) == 0) {
                        fail(ctx, ctx.channel().remoteAddress() + " is not a fixed-newstyle NBD server");
                        return false;
                    }
                    final int clientFlags = CLIENT_FLAG_FIXED_NEWSTYLE
                        | ((flags & FLAG_NO_ZEROES) != 0 ? CLIENT_FLAG_NO_ZEROES : 0);
                    ctx.write(ctx.alloc().buffer(4).writeInt(clientFlags), ctx.voidPromise());
                    state = State.OPTION_REPLY;
                    if (options.tls != null) {
                        option(OPT_STARTTLS, new byte[0]);
                    } else {
                        sendNextOption();
                    }
                    return true;
                }
                case OPTION_REPLY -> {
                    return optionReply(in);
                }
                case REPLY -> {
                    return reply(in);
                }
                default -> {
                    return false;
                }
            }
        }

        private boolean optionReply(final ByteBuf in) {
            if (in.readableBytes() < OPTION_REPLY_HEADER_LENGTH) {
                return false;
            }
            final long length = in.getUnsignedInt(in.readerIndex() + 16);
            if (length > MAX_REPLY) {
                fail(ctx, "option reply of " + length + " bytes from " + ctx.channel().remoteAddress());
                return false;
            }
            if (in.readableBytes() < OPTION_REPLY_HEADER_LENGTH + length) {
                return false;
            }
            final long magic = in.readLong();
            final int option = in.readInt();
            final int type = in.readInt();
            in.readInt();
            final ByteBuf data = in.readSlice((int) length);
            final Integer expected = optionQueue.peek();
            if (magic != OPTION_REPLY_MAGIC || expected == null || option != expected) {
                fail(ctx, "bad option reply from " + ctx.channel().remoteAddress());
                return false;
            }
            if (option == OPT_STARTTLS) {
                return startTls(type, data, in);
            }
            final boolean extra = currentExtra;
            if ((type & 0x8000_0000) != 0) {
                if (option == OPT_STRUCTURED_REPLY) {
                    structured = false;
                    sendNextOption();
                    return true;
                }
                final String message = data.toString(StandardCharsets.UTF_8);
                final NbdClientException e = new NbdClientException("server refused option " + option + ": "
                    + (message.isEmpty() ? "error 0x" + Integer.toHexString(type) : message), 0, type, null);
                closeReason = e.getMessage();
                ready.completeExceptionally(e);
                state = State.DONE;
                ctx.close();
                return false;
            }
            if (type == REP_ACK) {
                if (option == OPT_STRUCTURED_REPLY) {
                    structured = true;
                }
                if (option == OPT_GO) {
                    optionQueue.poll();
                    state = State.REPLY;
                    transmission = true;
                    ready.complete(null);
                    return true;
                }
                sendNextOption();
                return true;
            }
            if (extra) {
                final byte[] bytes = new byte[data.readableBytes()];
                data.readBytes(bytes);
                extraReplies.add(bytes);
            } else if (option == OPT_GO && type == REP_INFO && data.readableBytes() >= 2
                && data.getUnsignedShort(data.readerIndex()) == INFO_EXPORT && data.readableBytes() >= 12) {
                size = data.getLong(data.readerIndex() + 2);
                transmissionFlags = data.getUnsignedShort(data.readerIndex() + 10);
            }
            return true;
        }

        /** HOST:PORT as the caller named it. */
        private String peer() {
            return address.getHostString() + ":" + address.getPort();
        }

        /** The answer to STARTTLS: an ACK puts TLS in front of this handler; anything else ends the connection. */
        private boolean startTls(final int type, final ByteBuf data, final ByteBuf in) {
            if (type != REP_ACK) {
                final String message = data.toString(StandardCharsets.UTF_8);
                final NbdClientException e = new NbdClientException(peer() + " refused TLS (STARTTLS answered "
                    + optionErrorName(type) + (message.isEmpty() ? "" : ": " + message) + "); this side is configured"
                    + " for TLS and never falls back to plaintext: turn TLS on there (nbd.tls) or off here", 0,
                    (type & 0x8000_0000) != 0 ? type : REP_ERR_POLICY, null);
                closeReason = e.getMessage();
                ready.completeExceptionally(e);
                state = State.DONE;
                ctx.close();
                return false;
            }
            optionQueue.poll();
            if (in.isReadable()) {
                // Sent in plaintext before our ClientHello: never read as if it had come through TLS.
                fail(ctx, peer() + " sent bytes after its STARTTLS acknowledgement, before TLS; refusing them");
                return false;
            }
            state = State.TLS_HANDSHAKE;
            ctx.pipeline().addBefore(ctx.name(), "nbd-client-tls", options.tls.newHandler(ctx.alloc(),
                address.getHostString(), address.getPort()));
            return false;
        }

        @Override
        public void userEventTriggered(final ChannelHandlerContext ctx, final Object event) throws Exception {
            if (event instanceof SslHandshakeCompletionEvent done && state == State.TLS_HANDSHAKE) {
                if (done.isSuccess()) {
                    state = State.OPTION_REPLY;
                    sendNextOption();
                } else {
                    tlsFailed(done.cause());
                }
                return;
            }
            super.userEventTriggered(ctx, event);
        }

        private static String optionErrorName(final int type) {
            return switch (type) {
                case REP_ERR_POLICY -> "ERR_POLICY";
                case REP_ERR_UNSUP -> "ERR_UNSUP";
                case REP_ERR_INVALID -> "ERR_INVALID";
                default -> "0x" + Integer.toHexString(type);
            };
        }

        // ------------------------------------------------------------------------------------------ replies

        private boolean reply(final ByteBuf in) {
            if (in.readableBytes() < 4) {
                return false;
            }
            final int magic = in.getInt(in.readerIndex());
            if (magic == SIMPLE_REPLY_MAGIC) {
                if (in.readableBytes() < SIMPLE_REPLY_LENGTH) {
                    return false;
                }
                final int error = in.getInt(in.readerIndex() + 4);
                final long cookie = in.getLong(in.readerIndex() + 8);
                final Pending p = pending.get(cookie);
                if (p == null) {
                    fail(ctx, "reply for unknown cookie " + cookie + " from " + ctx.channel().remoteAddress());
                    return false;
                }
                final int dataLength = p.type == CMD_READ && error == 0 ? p.length : 0;
                if (in.readableBytes() < SIMPLE_REPLY_LENGTH + dataLength) {
                    return false;
                }
                in.skipBytes(SIMPLE_REPLY_LENGTH);
                if (error != 0) {
                    finish(p, new NbdClientException(commandName(p.type) + " at " + p.offset + "+" + p.length
                        + " failed with NBD error " + error, error, 0, null));
                } else {
                    p.data = dataLength > 0 ? in.readRetainedSlice(dataLength) : null;
                    finish(p, null);
                }
                return true;
            }
            if (magic != STRUCTURED_REPLY_MAGIC) {
                fail(ctx, "bad reply magic 0x" + Integer.toHexString(magic) + " from " + ctx.channel().remoteAddress());
                return false;
            }
            if (in.readableBytes() < CHUNK_HEADER_LENGTH) {
                return false;
            }
            final long length = in.getUnsignedInt(in.readerIndex() + 16);
            if (length > MAX_REPLY) {
                fail(ctx, "reply chunk of " + length + " bytes from " + ctx.channel().remoteAddress());
                return false;
            }
            if (in.readableBytes() < CHUNK_HEADER_LENGTH + length) {
                return false;
            }
            in.skipBytes(4);
            final int flags = in.readUnsignedShort();
            final int type = in.readUnsignedShort();
            final long cookie = in.readLong();
            in.skipBytes(4);
            final ByteBuf chunk = in.readSlice((int) length);
            final Pending p = pending.get(cookie);
            if (p == null) {
                fail(ctx, "reply for unknown cookie " + cookie + " from " + ctx.channel().remoteAddress());
                return false;
            }
            if (!chunk(p, type, chunk)) {
                return false;
            }
            if ((flags & REPLY_FLAG_DONE) != 0) {
                finish(p, p.error);
            }
            return true;
        }

        private boolean chunk(final Pending p, final int type, final ByteBuf chunk) {
            switch (type) {
                case REPLY_TYPE_NONE -> {
                    return true;
                }
                case REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE -> {
                    if (p.type != CMD_READ || chunk.readableBytes() < (type == REPLY_TYPE_OFFSET_HOLE ? 12 : 8)) {
                        fail(ctx, "unexpected read chunk from " + ctx.channel().remoteAddress());
                        return false;
                    }
                    final long offset = chunk.readLong();
                    final long length = type == REPLY_TYPE_OFFSET_HOLE ? chunk.readUnsignedInt() : chunk.readableBytes();
                    if (offset < p.offset || offset + length > p.offset + p.length) {
                        fail(ctx, "read chunk outside the request from " + ctx.channel().remoteAddress());
                        return false;
                    }
                    if (p.data == null) {
                        p.data = ctx.alloc().buffer(p.length, p.length);
                        p.data.setZero(0, p.length);
                        p.data.writerIndex(p.length);
                    }
                    if (type == REPLY_TYPE_OFFSET_DATA) {
                        p.data.setBytes((int) (offset - p.offset), chunk, chunk.readerIndex(), (int) length);
                    }
                    return true;
                }
                case REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET -> {
                    final int error = chunk.readableBytes() >= 4 ? chunk.readInt() : 5;
                    String message = "";
                    if (chunk.readableBytes() >= 2) {
                        final int messageLength = chunk.readUnsignedShort();
                        if (messageLength <= chunk.readableBytes()) {
                            message = chunk.readCharSequence(messageLength, StandardCharsets.UTF_8).toString();
                        }
                    }
                    if (p.error == null) {
                        p.error = new NbdClientException(commandName(p.type) + " at " + p.offset + "+" + p.length
                            + " failed with NBD error " + error + (message.isEmpty() ? "" : ": " + message), error, 0,
                            null);
                    }
                    return true;
                }
                default -> {
                    if ((type & 0x8000) != 0) {
                        if (p.error == null) {
                            p.error = new NbdClientException(commandName(p.type) + " failed: unknown error chunk "
                                + type, 5, 0, null);
                        }
                    }
                    return true;
                }
            }
        }

        private void finish(final Pending p, final NbdClientException error) {
            pending.remove(p.cookie);
            inFlight = pending.size();
            if (error != null) {
                ReferenceCountUtil.release(p.data);
                p.data = null;
                p.future.completeExceptionally(error);
                return;
            }
            ByteBuf data = p.data;
            p.data = null;
            if (p.type == CMD_READ && data == null) {
                data = p.length == 0 ? ctx.alloc().buffer(0) : ctx.alloc().buffer(p.length, p.length);
                data.setZero(0, p.length);
                data.writerIndex(p.length);
            }
            if (!p.future.complete(data)) {
                ReferenceCountUtil.release(data);
            }
        }

        private static String commandName(final int type) {
            return switch (type) {
                case CMD_READ -> "READ";
                case CMD_WRITE -> "WRITE";
                case CMD_FLUSH -> "FLUSH";
                case CMD_TRIM -> "TRIM";
                case CMD_WRITE_ZEROES -> "WRITE_ZEROES";
                default -> "command " + type;
            };
        }
    }
}
