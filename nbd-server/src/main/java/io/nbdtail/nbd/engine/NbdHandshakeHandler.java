package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.codec.NbdReplies;
import io.nbdtail.nbd.codec.NbdRequestDecoder;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.tls.ClientIdentity;
import io.nbdtail.nbd.tls.NbdTls;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPipeline;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.util.concurrent.ScheduledFuture;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static io.nbdtail.nbd.protocol.NbdConstants.*;

/**
 * The fixed-newstyle handshake: greeting, client flags, then option haggling until the client picks an export
 * with NBD_OPT_GO or NBD_OPT_EXPORT_NAME. Then this handler installs the transmission codec behind itself and
 * leaves the pipeline; bytes the client already pipelined after its GO are passed on.
 *
 * <p>Rules kept here (NBD spec, "Option haggling" and the CVE list in reliability.md):
 * <ul>
 *   <li>Nothing is allocated from a length the client sent until it is checked: an option longer than
 *       {@code maxOptionLength} gets ERR_TOO_BIG and the connection is closed, and strings are read only once
 *       their length fits inside the option.</li>
 *   <li>Unknown options get ERR_UNSUP and haggling continues; malformed ones get ERR_INVALID.</li>
 *   <li>Unknown client flags, a bad option magic, too many options or a slow handshake close the connection.</li>
 *   <li>An export that does not exist and one the client may not open get the same answer.</li>
 *   <li>STARTTLS (when TLS is configured): bytes the client sent after it in plaintext close the connection,
 *       and everything negotiated before it is forgotten (nbdkit's CVE-2021-3716). With TLS required, every
 *       option but STARTTLS and ABORT gets ERR_TLS_REQD until TLS is up, and EXPORT_NAME closes.</li>
 * </ul>
 */
public final class NbdHandshakeHandler extends ByteToMessageDecoder {
    private static final Logger LOG = LoggerFactory.getLogger(NbdHandshakeHandler.class);

    /** Set on connections accepted on a volume's own service address: only that volume is visible. */
    public static final io.netty.util.AttributeKey<String> ONLY_EXPORT =
        io.netty.util.AttributeKey.valueOf("nbdtail.onlyExport");

    /** The only metadata context id this server hands out (per connection, opaque to the client). */
    static final int BASE_ALLOCATION_ID = 1;

    private enum State {
        /** Waiting for the client's 4-byte flags. */
        CLIENT_FLAGS,
        /** Waiting for a 16-byte option header. */
        OPTION_HEADER,
        /** Waiting for the option's data. */
        OPTION_DATA,
        /** An option is being answered asynchronously (nbdtail's mirror option); input waits. */
        PAUSED,
        /** Transmission started, or the connection is being closed. */
        DONE
    }

    private final NbdServerContext context;
    private final NbdServerConfig config;
    /** {@code null} when TLS is off. */
    private final NbdTls tls;

    private State state = State.CLIENT_FLAGS;
    private boolean noZeroes;
    private boolean structuredReplies;
    private int optionCount;
    private int option;
    private int optionLength;
    /** The export a SET_META_CONTEXT was made for; the selection applies only to that export. */
    private String metaContextExport;
    private List<MetaContext> selectedContexts = List.of();
    private ScheduledFuture<?> timeout;
    /** STARTTLS was accepted: everything from here on goes through the TLS handler in front of this one. */
    private boolean tlsActive;
    /** The receiving export a mirror hello on this connection opened to it; {@code null} for ordinary clients. */
    private Export mirrorExport;

    public NbdHandshakeHandler(final NbdServerContext context) {
        this.context = context;
        this.config = context.config();
        this.tls = context.tls();
    }

    @Override
    public void channelActive(final ChannelHandlerContext ctx) throws Exception {
        ctx.writeAndFlush(NbdReplies.greeting(ctx.alloc()), ctx.voidPromise());
        timeout = ctx.executor().schedule(() -> {
            if (state != State.DONE) {
                LOG.debug("handshake timeout for {}", ctx.channel().remoteAddress());
                closeNow(ctx);
            }
        }, config.handshakeTimeoutMillis, TimeUnit.MILLISECONDS);
        super.channelActive(ctx);
    }

    @Override
    protected void handlerRemoved0(final ChannelHandlerContext ctx) {
        cancelTimeout();
    }

    @Override
    public void channelInactive(final ChannelHandlerContext ctx) throws Exception {
        cancelTimeout();
        state = State.DONE;
        super.channelInactive(ctx);
    }

    private void cancelTimeout() {
        if (timeout != null) {
            timeout.cancel(false);
            timeout = null;
        }
    }

    @Override
    protected void decode(final ChannelHandlerContext ctx, final ByteBuf in, final List<Object> out) {
        switch (state) {
            case CLIENT_FLAGS:
                if (in.readableBytes() < 4) {
                    return;
                }
                final int flags = in.readInt();
                if ((flags & ~KNOWN_CLIENT_FLAGS) != 0) {
                    reject(ctx, in, "unknown client flags 0x" + Integer.toHexString(flags));
                    return;
                }
                noZeroes = (flags & CLIENT_FLAG_NO_ZEROES) != 0;
                state = State.OPTION_HEADER;
                // fall through: the first option may have arrived with the flags
            case OPTION_HEADER:
                if (in.readableBytes() < OPTION_HEADER_LENGTH) {
                    return;
                }
                final long magic = in.readLong();
                if (magic != IHAVEOPT) {
                    reject(ctx, in, "bad option magic 0x" + Long.toHexString(magic));
                    return;
                }
                option = in.readInt();
                final long length = in.readUnsignedInt();
                if (++optionCount > config.maxOptions) {
                    reject(ctx, in, "more than " + config.maxOptions + " options");
                    return;
                }
                if (length > config.maxOptionLength) {
                    ctx.writeAndFlush(NbdReplies.optionError(ctx.alloc(), option, REP_ERR_TOO_BIG, "option of "
                        + length + " bytes is longer than the limit of " + config.maxOptionLength))
                        .addListener(ChannelFutureListener.CLOSE);
                    in.skipBytes(in.readableBytes());
                    state = State.DONE;
                    return;
                }
                optionLength = (int) length;
                state = State.OPTION_DATA;
                // fall through
            case OPTION_DATA:
                if (in.readableBytes() < optionLength) {
                    return;
                }
                final ByteBuf data = in.readSlice(optionLength);
                state = State.OPTION_HEADER;
                handleOption(ctx, data, in);
                return;
            case PAUSED:
                return;
            case DONE:
                in.skipBytes(in.readableBytes());
                return;
            default:
                throw new IllegalStateException("unknown state " + state);
        }
    }

    private void handleOption(final ChannelHandlerContext ctx, final ByteBuf data, final ByteBuf in) {
        if (context.shuttingDown() && option != OPT_ABORT) {
            if (option == OPT_EXPORT_NAME) {
                closeNow(ctx);
            } else {
                reply(ctx, NbdReplies.optionError(ctx.alloc(), option, REP_ERR_SHUTDOWN, "server is shutting down"));
            }
            return;
        }
        if (tls != null && tls.required() && !tlsActive && option != OPT_STARTTLS && option != OPT_ABORT) {
            if (option == OPT_EXPORT_NAME) {
                LOG.debug("plaintext EXPORT_NAME from {} while TLS is required", ctx.channel().remoteAddress());
                closeNow(ctx);
            } else {
                reply(ctx, NbdReplies.optionError(ctx.alloc(), option, REP_ERR_TLS_REQD,
                    "this server requires TLS: send NBD_OPT_STARTTLS first"));
            }
            return;
        }
        switch (option) {
            case OPT_EXPORT_NAME -> exportName(ctx, data);
            case OPT_ABORT -> {
                state = State.DONE;
                ctx.writeAndFlush(NbdReplies.optionAck(ctx.alloc(), option)).addListener(ChannelFutureListener.CLOSE);
            }
            case OPT_LIST -> list(ctx, data);
            case OPT_STARTTLS -> startTls(ctx, data, in);
            case OPT_INFO, OPT_GO -> infoOrGo(ctx, data);
            case OPT_STRUCTURED_REPLY -> structuredReply(ctx, data);
            case OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT -> metaContext(ctx, data);
            case OPT_NBDTAIL_MIRROR -> mirror(ctx, data);
            default -> reply(ctx, NbdReplies.optionError(ctx.alloc(), option, REP_ERR_UNSUP,
                "option " + Integer.toUnsignedString(option) + " is not supported"));
        }
    }

    private void exportName(final ChannelHandlerContext ctx, final ByteBuf data) {
        // EXPORT_NAME has no error reply: an unknown or refused export can only be answered by closing.
        if (data.readableBytes() > MAX_STRING_LENGTH) {
            closeNow(ctx);
            return;
        }
        final String name = data.toString(StandardCharsets.UTF_8);
        final Export export = findExport(ctx, name);
        if (export == null) {
            LOG.debug("EXPORT_NAME {} refused for {}", name, ctx.channel().remoteAddress());
            closeNow(ctx);
            return;
        }
        final int flags = export.transmissionFlags(structuredReplies);
        ctx.write(NbdReplies.exportNameReply(ctx.alloc(), export.size(), flags, noZeroes), ctx.voidPromise());
        startTransmission(ctx, export, flags, name);
    }

    /**
     * NBD_OPT_STARTTLS: acknowledge in plaintext, put the TLS handler in front of this one, and forget what was
     * negotiated so far. The client must wait for the acknowledgement before its TLS ClientHello, so bytes that
     * are already here were sent in plaintext; reading them as if they had come through TLS would let a man in the
     * middle inject options, so the connection is closed instead.
     */
    private void startTls(final ChannelHandlerContext ctx, final ByteBuf data, final ByteBuf in) {
        if (data.isReadable()) {
            reply(ctx, invalid(ctx, "STARTTLS takes no data"));
        } else if (tls == null) {
            reply(ctx, NbdReplies.optionError(ctx.alloc(), option, REP_ERR_POLICY, "TLS is not configured on this"
                + " server"));
        } else if (tlsActive) {
            reply(ctx, invalid(ctx, "TLS is already active"));
        } else if (in.isReadable()) {
            reject(ctx, in, "plaintext bytes pipelined after STARTTLS");
        } else {
            // Written before the TLS handler exists, so the acknowledgement goes out in plaintext.
            ctx.writeAndFlush(NbdReplies.optionAck(ctx.alloc(), option), ctx.voidPromise());
            ctx.pipeline().addBefore(ctx.name(), "nbd-tls", tls.newHandler(ctx.alloc()));
            tlsActive = true;
            structuredReplies = false;
            metaContextExport = null;
            selectedContexts = List.of();
        }
    }

    /** The identity the client proved over TLS, or {@code null}. */
    private ClientIdentity clientIdentity(final ChannelHandlerContext ctx) {
        return tlsActive ? NbdTls.identity(ctx.pipeline()) : null;
    }

    /**
     * The export called {@code name} if this client may open it: the address check of the registry, then the TLS
     * authorization. A refusal looks exactly like a name that does not exist.
     */
    private Export findExport(final ChannelHandlerContext ctx, final String name) {
        final Export export = find(ctx, name);
        if (export == null || tls == null || export == mirrorExport) {
            // A receiving volume is opened only by the connection whose mirror hello proved the secret (and the
            // source's TLS identity, if the receive named one); nbd.tls.authorization is about who may use the
            // volume once it is served.
            return export;
        }
        final ClientIdentity identity = clientIdentity(ctx);
        if (!tls.authorizes(export.name(), identity)) {
            LOG.info("refused export={} to client={} identity={}: not allowed by nbd.tls.authorization",
                export.name(), ctx.channel().remoteAddress(), identity == null ? "none (no TLS)" : identity);
            return null;
        }
        return export;
    }

    private void list(final ChannelHandlerContext ctx, final ByteBuf data) {
        if (data.isReadable()) {
            reply(ctx, invalid(ctx, "LIST takes no data"));
            return;
        }
        final String only = ctx.channel().attr(ONLY_EXPORT).get();
        for (final Export export : context.exports().list(ctx.channel().remoteAddress())) {
            if (only != null && !only.equals(export.name())
                || tls != null && !tls.authorizes(export.name(), clientIdentity(ctx))) {
                continue;
            }
            ctx.write(NbdReplies.optionServer(ctx.alloc(), option, export.name(), export.description()),
                ctx.voidPromise());
        }
        reply(ctx, NbdReplies.optionAck(ctx.alloc(), option));
    }

    private void structuredReply(final ChannelHandlerContext ctx, final ByteBuf data) {
        if (data.isReadable()) {
            reply(ctx, invalid(ctx, "STRUCTURED_REPLY takes no data"));
        } else if (structuredReplies) {
            reply(ctx, invalid(ctx, "structured replies are already negotiated"));
        } else {
            structuredReplies = true;
            reply(ctx, NbdReplies.optionAck(ctx.alloc(), option));
        }
    }

    /**
     * NBD_OPT_INFO and NBD_OPT_GO: {@code u32 name length, name, u16 n, n x u16 info request}.
     */
    private void infoOrGo(final ChannelHandlerContext ctx, final ByteBuf data) {
        if (data.readableBytes() < 6) {
            reply(ctx, invalid(ctx, "option data too short"));
            return;
        }
        final long nameLength = data.readUnsignedInt();
        if (nameLength > data.readableBytes() - 2) {
            reply(ctx, invalid(ctx, "export name length " + nameLength + " exceeds the option"));
            return;
        }
        if (nameLength > MAX_STRING_LENGTH) {
            reply(ctx, invalid(ctx, "export name longer than " + MAX_STRING_LENGTH + " bytes"));
            return;
        }
        final String name = data.readCharSequence((int) nameLength, StandardCharsets.UTF_8).toString();
        final int requests = data.readUnsignedShort();
        if (data.readableBytes() != 2 * requests) {
            reply(ctx, invalid(ctx, "information request count " + requests + " does not match the option length"));
            return;
        }
        boolean wantName = false;
        boolean wantDescription = false;
        for (int i = 0; i < requests; i++) {
            final int info = data.readUnsignedShort();
            wantName |= info == INFO_NAME;
            wantDescription |= info == INFO_DESCRIPTION;
        }
        final Export export = findExport(ctx, name);
        if (export == null) {
            reply(ctx, NbdReplies.optionError(ctx.alloc(), option, REP_ERR_UNKNOWN,
                "export '" + name + "' is not available"));
            return;
        }
        final int flags = export.transmissionFlags(structuredReplies);
        ctx.write(NbdReplies.infoExport(ctx.alloc(), option, export.size(), flags), ctx.voidPromise());
        if (wantName) {
            ctx.write(NbdReplies.infoString(ctx.alloc(), option, INFO_NAME, export.name()), ctx.voidPromise());
        }
        if (wantDescription && !export.description().isEmpty()) {
            ctx.write(NbdReplies.infoString(ctx.alloc(), option, INFO_DESCRIPTION, export.description()),
                ctx.voidPromise());
        }
        // Byte-granular I/O works on both file and block-device volumes (the page cache sits in between).
        ctx.write(NbdReplies.infoBlockSize(ctx.alloc(), option, 1, 4096, config.maxPayload), ctx.voidPromise());
        if (option == OPT_INFO) {
            reply(ctx, NbdReplies.optionAck(ctx.alloc(), option));
            return;
        }
        ctx.write(NbdReplies.optionAck(ctx.alloc(), option), ctx.voidPromise());
        startTransmission(ctx, export, flags, name);
    }

    /**
     * LIST_META_CONTEXT and SET_META_CONTEXT:
     * {@code u32 name length, export name, u32 n, n x (u32 length, query)}.
     */
    private void metaContext(final ChannelHandlerContext ctx, final ByteBuf data) {
        final boolean set = option == OPT_SET_META_CONTEXT;
        // The spec: a SET "replaces all previously-set metadata contexts (including when this command fails)".
        if (set) {
            selectedContexts = List.of();
        }
        if (set && !structuredReplies) {
            reply(ctx, invalid(ctx, "SET_META_CONTEXT needs structured replies first"));
            return;
        }
        if (data.readableBytes() < 8) {
            reply(ctx, invalid(ctx, "option data too short"));
            return;
        }
        final long nameLength = data.readUnsignedInt();
        if (nameLength > data.readableBytes() - 4 || nameLength > MAX_STRING_LENGTH) {
            reply(ctx, invalid(ctx, "export name length " + nameLength + " is invalid"));
            return;
        }
        final String name = data.readCharSequence((int) nameLength, StandardCharsets.UTF_8).toString();
        final long queries = data.readUnsignedInt();
        final List<String> asked = new ArrayList<>();
        for (long i = 0; i < queries; i++) {
            if (data.readableBytes() < 4) {
                reply(ctx, invalid(ctx, "query count " + queries + " does not match the option length"));
                return;
            }
            final long queryLength = data.readUnsignedInt();
            if (queryLength > data.readableBytes() || queryLength > MAX_STRING_LENGTH) {
                reply(ctx, invalid(ctx, "query length " + queryLength + " is invalid"));
                return;
            }
            asked.add(data.readCharSequence((int) queryLength, StandardCharsets.UTF_8).toString());
        }
        if (data.isReadable()) {
            reply(ctx, invalid(ctx, "trailing bytes after the queries"));
            return;
        }
        final Export export = findExport(ctx, name);
        if (export == null) {
            reply(ctx, NbdReplies.optionError(ctx.alloc(), option, REP_ERR_UNKNOWN,
                "export '" + name + "' is not available"));
            return;
        }
        final List<MetaContext> matched = new ArrayList<>();
        for (final MetaContext offered : MetaContext.offeredBy(export.volume())) {
            // A LIST without queries lists everything; a SET without queries selects nothing.
            if (!set && asked.isEmpty() || asked.stream().anyMatch(q -> offered.matches(q, !set))) {
                matched.add(offered);
            }
        }
        if (set) {
            metaContextExport = name;
            selectedContexts = matched;
        }
        for (final MetaContext m : matched) {
            ctx.write(NbdReplies.metaContext(ctx.alloc(), option, set ? m.id() : 0, m.name()), ctx.voidPromise());
        }
        reply(ctx, NbdReplies.optionAck(ctx.alloc(), option));
    }

    /** The export {@code name} for this connection: the registry's, or the one a mirror hello opened. */
    private Export find(final ChannelHandlerContext ctx, final String name) {
        if (mirrorExport != null && mirrorExport.name().equals(name)) {
            return mirrorExport.closing() ? null : mirrorExport;
        }
        final String only = ctx.channel().attr(ONLY_EXPORT).get();
        if (only != null) {
            return name.isEmpty() || name.equals(only) ? context.exports().find(only, ctx.channel().remoteAddress())
                : null;
        }
        return context.exports().find(name, ctx.channel().remoteAddress());
    }

    /**
     * nbdtail's mirror option: answered by the {@link MirrorPeer} off the event loop; input waits meanwhile
     * (a client sends nothing else until it has the answer).
     */
    private void mirror(final ChannelHandlerContext ctx, final ByteBuf data) {
        final MirrorPeer peer = context.mirrorPeer();
        if (peer == null) {
            reply(ctx, NbdReplies.optionError(ctx.alloc(), option, REP_ERR_UNSUP, "this server does not receive"
                + " mirrors"));
            return;
        }
        final byte[] request = new byte[data.readableBytes()];
        data.readBytes(request);
        final int opt = option;
        state = State.PAUSED;
        peer.handle(request, ctx.channel().remoteAddress(), clientIdentity(ctx)).whenComplete((result, error) ->
            ctx.executor().execute(() -> {
                if (state != State.PAUSED) {
                    return;
                }
                state = State.OPTION_HEADER;
                if (error != null) {
                    final Throwable cause = error instanceof java.util.concurrent.CompletionException
                        && error.getCause() != null ? error.getCause() : error;
                    final int type = cause instanceof MirrorPeer.Refused r ? r.replyType() : REP_ERR_PLATFORM;
                    reply(ctx, NbdReplies.optionError(ctx.alloc(), opt, type, String.valueOf(cause.getMessage())));
                } else {
                    mirrorExport = result.export() != null ? result.export() : mirrorExport;
                    final ByteBuf header = ctx.alloc().buffer(OPTION_REPLY_HEADER_LENGTH + result.reply().length);
                    header.writeLong(OPTION_REPLY_MAGIC).writeInt(opt).writeInt(REP_NBDTAIL_MIRROR)
                        .writeInt(result.reply().length).writeBytes(result.reply());
                    ctx.write(header, ctx.voidPromise());
                    reply(ctx, NbdReplies.optionAck(ctx.alloc(), opt));
                }
                // Anything the client sent meanwhile is still in the cumulation; decode it now.
                try {
                    channelRead(ctx, io.netty.buffer.Unpooled.EMPTY_BUFFER);
                } catch (final Exception e) {
                    exceptionCaught(ctx, e);
                }
            }));
    }

    private void startTransmission(final ChannelHandlerContext ctx, final Export export, final int flags,
                                   final String name) {
        state = State.DONE;
        cancelTimeout();
        ctx.flush();
        final List<MetaContext> contexts = name.equals(metaContextExport) ? selectedContexts : List.of();
        final NbdSession session = new NbdSession(export, structuredReplies, flags, contexts,
            String.valueOf(ctx.channel().remoteAddress()), export == mirrorExport);
        final ChannelPipeline pipeline = ctx.pipeline();
        pipeline.addAfter(ctx.name(), "nbd-request-decoder",
            // With TLS, socket reads are ciphertext for the TLS handler: never straight into a payload buffer.
            new NbdRequestDecoder(config.maxPayload, config.maxDiscardedPayload, context.buffers(), !tlsActive));
        pipeline.addAfter("nbd-request-decoder", "nbd-transmission", new NbdTransmissionHandler(context, session));
        pipeline.remove(this);
    }

    @Override
    public void exceptionCaught(final ChannelHandlerContext ctx, final Throwable cause) {
        // A reset or a decode failure during the handshake concerns this connection only.
        if (tlsActive) {
            // Usually a certificate or key the operator should hear about (untrusted, expired, missing).
            LOG.info("TLS with {} failed: {}", ctx.channel().remoteAddress(), cause.toString());
        } else {
            LOG.debug("handshake with {} failed: {}", ctx.channel().remoteAddress(), cause.toString());
        }
        state = State.DONE;
        ctx.close();
    }

    private ByteBuf invalid(final ChannelHandlerContext ctx, final String message) {
        return NbdReplies.optionError(ctx.alloc(), option, REP_ERR_INVALID, message);
    }

    private void reply(final ChannelHandlerContext ctx, final ByteBuf reply) {
        ctx.writeAndFlush(reply, ctx.voidPromise());
    }

    private void reject(final ChannelHandlerContext ctx, final ByteBuf in, final String why) {
        LOG.debug("closing {} during handshake: {}", ctx.channel().remoteAddress(), why);
        in.skipBytes(in.readableBytes());
        closeNow(ctx);
    }

    private void closeNow(final ChannelHandlerContext ctx) {
        state = State.DONE;
        ctx.writeAndFlush(io.netty.buffer.Unpooled.EMPTY_BUFFER).addListener(ChannelFutureListener.CLOSE);
    }
}
