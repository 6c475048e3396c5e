package io.nbdtail.nbd.tls;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufUtil;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPromise;
import io.netty.handler.ssl.SslHandshakeCompletionEvent;
import io.netty.util.ReferenceCountUtil;
import org.bouncycastle.tls.AlertDescription;
import org.bouncycastle.tls.BasicTlsPSKExternal;
import org.bouncycastle.tls.BasicTlsPSKIdentity;
import org.bouncycastle.tls.CipherSuite;
import org.bouncycastle.tls.PRFAlgorithm;
import org.bouncycastle.tls.PSKTlsClient;
import org.bouncycastle.tls.PSKTlsServer;
import org.bouncycastle.tls.ProtocolVersion;
import org.bouncycastle.tls.PskIdentity;
import org.bouncycastle.tls.TlsAuthentication;
import org.bouncycastle.tls.TlsClientProtocol;
import org.bouncycastle.tls.TlsFatalAlert;
import org.bouncycastle.tls.TlsPSKExternal;
import org.bouncycastle.tls.TlsPSKIdentityManager;
import org.bouncycastle.tls.TlsProtocol;
import org.bouncycastle.tls.TlsServerProtocol;
import org.bouncycastle.tls.TlsUtils;
import org.bouncycastle.tls.crypto.TlsCrypto;
import org.bouncycastle.tls.crypto.impl.bc.BcTlsCrypto;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.Vector;
import javax.net.ssl.SSLHandshakeException;

/**
 * TLS with pre-shared keys (RFC 4279 and TLS 1.3 external PSKs): on the server for NBD clients that authenticate
 * with a {@code keys.psk} file as qemu ({@code tls-creds-psk}) and libnbd ({@code tls-psk-file}) do, and on the
 * client side for a mirror source that presents one identity and key.
 *
 * <p>The JDK's TLS has no PSK cipher suites, and Bouncy Castle's JSSE provider exposes none either (there is no
 * JSSE API for them), so this handler drives Bouncy Castle's own TLS protocol engine in its non-blocking mode:
 * bytes from the socket go in with {@code offerInput}, handshake records and encrypted replies come out with
 * {@code readOutput}, and decrypted requests go up the pipeline. It copies through byte arrays, which costs some
 * throughput next to {@link io.netty.handler.ssl.SslHandler}; X.509 connections do not use it.
 *
 * <p>The peer's identity is known only once the handshake has finished, that is once the peer proved it holds
 * the key: before that {@link #identity()} is {@code null}. The end of the handshake is announced up the pipeline
 * with an {@link SslHandshakeCompletionEvent}, as {@link io.netty.handler.ssl.SslHandler} does.
 */
final class PskTlsHandler extends ChannelDuplexHandler {
    private static final TlsCrypto CRYPTO = new BcTlsCrypto(new SecureRandom());
    /** TLS 1.3 first; then TLS 1.2 PSK suites with (EC)DHE only, so a leaked key does not expose past sessions. */
    private static final int[] SUITES = {
        CipherSuite.TLS_AES_128_GCM_SHA256,
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
        CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
        CipherSuite.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
        CipherSuite.TLS_DHE_PSK_WITH_AES_128_GCM_SHA256,
        CipherSuite.TLS_DHE_PSK_WITH_AES_256_GCM_SHA384,
        CipherSuite.TLS_DHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
    };

    private final PskKeys keys;
    private final String clientIdentity;
    private final byte[] clientKey;
    private final TlsProtocol protocol;
    private String offered;
    private ClientIdentity identity;
    private boolean announced;

    private PskTlsHandler(final PskKeys keys, final String clientIdentity, final byte[] clientKey) {
        this.keys = keys;
        this.clientIdentity = clientIdentity;
        this.clientKey = clientKey;
        this.protocol = keys != null ? new TlsServerProtocol() : new TlsClientProtocol();
    }

    /** The server side: any identity of {@code keys}. */
    static PskTlsHandler server(final PskKeys keys) {
        return new PskTlsHandler(keys, null, null);
    }

    /** The client side, presenting {@code identity} with {@code key}. */
    static PskTlsHandler client(final String identity, final byte[] key) {
        return new PskTlsHandler(null, identity, key.clone());
    }

    /** The PSK identity the peer proved, or {@code null} before the handshake finished. */
    ClientIdentity identity() {
        return identity;
    }

    @Override
    public void handlerAdded(final ChannelHandlerContext ctx) throws Exception {
        if (protocol instanceof TlsServerProtocol server) {
            server.accept(new Server());
        } else {
            ((TlsClientProtocol) protocol).connect(new Client());
            sendOutput(ctx); // the ClientHello
        }
    }

    @Override
    public void channelRead(final ChannelHandlerContext ctx, final Object msg) {
        if (!(msg instanceof ByteBuf in)) {
            ctx.fireChannelRead(msg);
            return;
        }
        try {
            protocol.offerInput(ByteBufUtil.getBytes(in));
        } catch (final IOException e) {
            // Bouncy Castle has queued the alert: send it, then report and close.
            sendOutput(ctx);
            if (!announced) {
                announced = true;
                final SSLHandshakeException failed = new SSLHandshakeException("TLS-PSK handshake failed: "
                    + e.getMessage());
                failed.initCause(e);
                ctx.fireUserEventTriggered(new SslHandshakeCompletionEvent(failed));
            }
            ctx.fireExceptionCaught(e);
            ctx.close();
            return;
        } finally {
            in.release();
        }
        sendOutput(ctx);
        if (identity != null && !announced) {
            // Announced only now, outside Bouncy Castle's offerInput: the next handler may write at once.
            announced = true;
            ctx.fireUserEventTriggered(SslHandshakeCompletionEvent.SUCCESS);
        }
        final int n = protocol.getAvailableInputBytes();
        if (n > 0) {
            final ByteBuf plain = ctx.alloc().buffer(n);
            try {
                plain.writerIndex(protocol.readInput(plain.nioBuffer(0, n), n));
            } catch (final RuntimeException e) {
                plain.release();
                throw e;
            }
            ctx.fireChannelRead(plain);
        }
    }

    @Override
    public void channelReadComplete(final ChannelHandlerContext ctx) {
        ctx.fireChannelReadComplete();
    }

    @Override
    public void write(final ChannelHandlerContext ctx, final Object msg, final ChannelPromise promise) {
        if (!(msg instanceof ByteBuf buf)) {
            ReferenceCountUtil.release(msg);
            promise.setFailure(new IllegalArgumentException("only ByteBuf can be written through TLS"));
            return;
        }
        if (!buf.isReadable()) {
            // A flush marker (closeNow writes one), possibly before the TLS handshake has finished.
            buf.release();
            ctx.write(Unpooled.EMPTY_BUFFER, promise);
            return;
        }
        try {
            final byte[] plain = ByteBufUtil.getBytes(buf);
            protocol.writeApplicationData(plain, 0, plain.length);
        } catch (final IOException | IllegalStateException e) {
            // IllegalStateException: data before the handshake finished, or after the session closed.
            promise.setFailure(e);
            ctx.close();
            return;
        } finally {
            buf.release();
        }
        final int n = protocol.getAvailableOutputBytes();
        final ByteBuf out = ctx.alloc().buffer(n);
        out.writerIndex(protocol.readOutput(out.nioBuffer(0, n), n));
        ctx.write(out, promise);
    }

    @Override
    public void close(final ChannelHandlerContext ctx, final ChannelPromise promise) {
        if (!protocol.isClosed()) {
            try {
                protocol.close(); // close_notify
            } catch (final IOException ignored) {
                // Closing anyway.
            }
            sendOutput(ctx);
        }
        ctx.close(promise);
    }

    private void sendOutput(final ChannelHandlerContext ctx) {
        final int n = protocol.getAvailableOutputBytes();
        if (n > 0) {
            final ByteBuf out = ctx.alloc().buffer(n);
            out.writerIndex(protocol.readOutput(out.nioBuffer(0, n), n));
            ctx.writeAndFlush(out, ctx.voidPromise());
        }
    }

    /** The TLS server: keys by identity, TLS 1.3 and 1.2, and the identity once the handshake is done. */
    private final class Server extends PSKTlsServer {
        Server() {
            super(CRYPTO, new TlsPSKIdentityManager() {
                @Override
                public byte[] getHint() {
                    return null;
                }

                @Override
                public byte[] getPSK(final byte[] id) {
                    final String name = new String(id, StandardCharsets.UTF_8);
                    final byte[] key = keys.key(name);
                    if (key != null) {
                        offered = name;
                    }
                    return key;
                }
            });
        }

        @Override
        protected ProtocolVersion[] getSupportedVersions() {
            return ProtocolVersion.TLSv13.downTo(ProtocolVersion.TLSv12);
        }

        @Override
        protected int[] getSupportedCipherSuites() {
            return TlsUtils.getSupportedCipherSuites(getCrypto(), SUITES);
        }

        @Override
        public TlsPSKExternal getExternalPSK(final Vector identities) {
            for (final Object o : identities) {
                final byte[] id = ((PskIdentity) o).getIdentity();
                final String name = new String(id, StandardCharsets.UTF_8);
                final byte[] key = keys.key(name);
                if (key != null) {
                    offered = name;
                    return new BasicTlsPSKExternal(id, getCrypto().createSecret(key), PRFAlgorithm.tls13_hkdf_sha256);
                }
            }
            return null;
        }

        @Override
        public void notifyHandshakeComplete() throws IOException {
            super.notifyHandshakeComplete();
            // The Finished messages verified: the client holds the key of the identity it offered.
            identity = offered == null ? null : new ClientIdentity.Psk(offered);
        }
    }

    /** The TLS client: one identity and key, TLS 1.3 and 1.2, never a certificate. */
    private final class Client extends PSKTlsClient {
        Client() {
            super(CRYPTO, new BasicTlsPSKIdentity(clientIdentity, clientKey));
        }

        @Override
        protected ProtocolVersion[] getSupportedVersions() {
            return ProtocolVersion.TLSv13.downTo(ProtocolVersion.TLSv12);
        }

        @Override
        protected int[] getSupportedCipherSuites() {
            return TlsUtils.getSupportedCipherSuites(getCrypto(), SUITES);
        }

        @Override
        public Vector getExternalPSKs() {
            final Vector<TlsPSKExternal> psks = new Vector<>();
            psks.add(new BasicTlsPSKExternal(clientIdentity.getBytes(StandardCharsets.UTF_8),
                getCrypto().createSecret(clientKey), PRFAlgorithm.tls13_hkdf_sha256));
            return psks;
        }

        @Override
        public TlsAuthentication getAuthentication() throws IOException {
            // Only reached if the server did not take the key and authenticates with a certificate instead.
            throw new TlsFatalAlert(AlertDescription.handshake_failure, "the server did not accept PSK identity '"
                + clientIdentity + "' and offered a certificate instead");
        }

        @Override
        public void notifyHandshakeComplete() throws IOException {
            super.notifyHandshakeComplete();
            // The server's Finished verified: it holds the same key.
            identity = new ClientIdentity.Psk(clientIdentity);
        }
    }
}
