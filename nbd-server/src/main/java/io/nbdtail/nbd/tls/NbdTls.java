package io.nbdtail.nbd.tls;

import io.netty.buffer.ByteBufAllocator;
import io.netty.channel.ChannelHandler;
import io.netty.channel.ChannelPipeline;
import io.netty.handler.ssl.ClientAuth;
import io.netty.handler.ssl.SslContext;
import io.netty.handler.ssl.SslContextBuilder;
import io.netty.handler.ssl.SslHandler;
import io.netty.handler.ssl.SslProvider;

import javax.net.ssl.SSLPeerUnverifiedException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * TLS for the NBD handshake, built once from {@link TlsConfig}: the server's TLS handler for NBD_OPT_STARTTLS,
 * the identity a client proved, and whether that identity may open a volume.
 *
 * <p>X.509 runs on Netty's {@link SslHandler} over the JDK's TLS 1.3 and 1.2. The JDK has no TLS-PSK cipher
 * suites; PSK runs on Bouncy Castle's TLS protocol engine ({@link PskTlsHandler}).
 */
public final class NbdTls {
    /** TLS 1.0 and 1.1 are not offered (RFC 8996). */
    static final String[] PROTOCOLS = {"TLSv1.3", "TLSv1.2"};

    private final TlsConfig.Mode mode;
    private final SslContext x509;
    private final PskKeys psk;
    private final Map<String, Set<ClientIdentity>> authorization;
    private final boolean allowUnlisted;
    private final boolean verifiesClients;

    private NbdTls(final TlsConfig.Mode mode, final SslContext x509, final PskKeys psk,
                   final Map<String, Set<ClientIdentity>> authorization, final boolean allowUnlisted,
                   final boolean verifiesClients) {
        this.mode = mode;
        this.x509 = x509;
        this.psk = psk;
        this.authorization = authorization;
        this.allowUnlisted = allowUnlisted;
        this.verifiesClients = verifiesClients;
    }

    /**
     * Checks the configuration and loads the certificates or keys; {@code null} when TLS is off.
     *
     * @throws IllegalArgumentException naming what is wrong and how to fix it.
     */
    public static NbdTls create(final TlsConfig config) throws IOException {
        if (config == null) {
            return null;
        }
        final TlsConfig.Mode mode = config.parsedMode();
        if (mode == TlsConfig.Mode.OFF) {
            return null;
        }
        final boolean certificates = config.certificates != null;
        final boolean keys = config.pskFile != null;
        if (certificates == keys) {
            throw new IllegalArgumentException("nbd.tls.mode is " + config.mode + ": set exactly one of"
                + " nbd.tls.certificates (a directory with ca-cert.pem, server-cert.pem, server-key.pem) and"
                + " nbd.tls.pskFile");
        }
        final Map<String, Set<ClientIdentity>> authorization = new HashMap<>();
        if (config.authorization != null) {
            for (final Map.Entry<String, List<String>> e : config.authorization.entrySet()) {
                final Set<ClientIdentity> ids = new HashSet<>();
                for (final String entry : e.getValue() == null ? List.<String>of() : e.getValue()) {
                    final ClientIdentity id = ClientIdentity.parse(entry);
                    if (id instanceof ClientIdentity.Certificate && !(certificates && config.verifyClients)) {
                        throw new IllegalArgumentException("nbd.tls.authorization of " + e.getKey() + " names a"
                            + " certificate (" + entry + "), but client certificates are not verified; set"
                            + " nbd.tls.certificates with verifyClients true, or use psk: identities");
                    }
                    if (id instanceof ClientIdentity.Psk && !keys) {
                        throw new IllegalArgumentException("nbd.tls.authorization of " + e.getKey() + " names a PSK"
                            + " identity (" + entry + "), but nbd.tls.pskFile is not set");
                    }
                    ids.add(id);
                }
                authorization.put(e.getKey(), Set.copyOf(ids));
            }
        }
        final boolean allowUnlisted = switch (config.unlistedVolumes == null ? "allow" : config.unlistedVolumes) {
            case "allow" -> true;
            case "deny" -> false;
            default -> throw new IllegalArgumentException("invalid nbd.tls.unlistedVolumes '" + config.unlistedVolumes
                + "': use allow or deny");
        };
        final SslContext x509 = certificates ? x509Context(Path.of(config.certificates), config.verifyClients) : null;
        final PskKeys psk = keys ? PskKeys.load(Path.of(config.pskFile)) : null;
        return new NbdTls(mode, x509, psk, Map.copyOf(authorization), allowUnlisted,
            certificates && config.verifyClients);
    }

    private static SslContext x509Context(final Path dir, final boolean verifyClients) throws IOException {
        final Path cert = dir.resolve("server-cert.pem");
        final Path key = dir.resolve("server-key.pem");
        final Path ca = dir.resolve("ca-cert.pem");
        for (final Path p : verifyClients ? List.of(cert, key, ca) : List.of(cert, key)) {
            if (!Files.isReadable(p)) {
                throw new IllegalArgumentException("nbd.tls.certificates: cannot read " + p + "; the directory needs"
                    + " server-cert.pem, server-key.pem" + (verifyClients ? " and ca-cert.pem (the CA that signs"
                    + " client certificates)" : ""));
            }
        }
        final SslContextBuilder builder;
        try {
            builder = SslContextBuilder.forServer(PemFiles.privateKey(key, "nbd.tls.certificates"),
                PemFiles.certificates(cert, "nbd.tls.certificates"));
        } catch (final IllegalArgumentException e) {
            if (e.getMessage() != null && e.getMessage().startsWith("nbd.tls.certificates")) {
                throw e;
            }
            throw new IllegalArgumentException("nbd.tls.certificates: cannot load " + cert + " with " + key + " ("
                + e.getMessage() + "); the key must be the certificate's, unencrypted", e);
        }
        builder.sslProvider(SslProvider.JDK).protocols(PROTOCOLS);
        if (verifyClients) {
            builder.trustManager(ca.toFile()).clientAuth(ClientAuth.REQUIRE);
        }
        try {
            return builder.build();
        } catch (final javax.net.ssl.SSLException e) {
            throw new IllegalArgumentException("nbd.tls.certificates: cannot use the files in " + dir + ": "
                + e.getMessage(), e);
        }
    }

    public TlsConfig.Mode mode() {
        return mode;
    }

    public boolean required() {
        return mode == TlsConfig.Mode.REQUIRED;
    }

    /** A new server-side TLS handler for one connection, to be placed in front of the handshake handler. */
    public ChannelHandler newHandler(final ByteBufAllocator alloc) {
        if (x509 != null) {
            return x509.newHandler(alloc);
        }
        return PskTlsHandler.server(psk);
    }

    /**
     * The identity the client proved on this pipeline's TLS session, or {@code null} without TLS (or before its
     * handshake finished).
     */
    public static ClientIdentity identity(final ChannelPipeline pipeline) {
        final SslHandler ssl = pipeline.get(SslHandler.class);
        if (ssl != null) {
            if (!ssl.handshakeFuture().isSuccess()) {
                return null;
            }
            try {
                final Certificate[] chain = ssl.engine().getSession().getPeerCertificates();
                if (chain.length > 0 && chain[0] instanceof X509Certificate x) {
                    return new ClientIdentity.Certificate(x.getSubjectX500Principal());
                }
            } catch (final SSLPeerUnverifiedException e) {
                return null;
            }
            return null;
        }
        final PskTlsHandler psk = pipeline.get(PskTlsHandler.class);
        return psk != null ? psk.identity() : null;
    }

    /**
     * Checks that a client could prove {@code identity} to this server: a certificate subject needs verified
     * client certificates, a PSK identity a key in the PSK file.
     *
     * @param tls this server's TLS, {@code null} when off.
     * @throws IllegalArgumentException saying why it could never be proved.
     */
    public static void checkProvable(final NbdTls tls, final ClientIdentity identity, final String what) {
        if (tls == null) {
            throw new IllegalArgumentException(what + " names a TLS identity (" + identity + "), but TLS is off on"
                + " this tail's NBD listener (nbd.tls.mode); turn it on or leave the identity out");
        }
        if (identity instanceof ClientIdentity.Certificate && !tls.verifiesClients) {
            throw new IllegalArgumentException(what + " names a certificate subject (" + identity + "), but this"
                + " tail does not verify client certificates (nbd.tls.certificates with verifyClients true)");
        }
        if (identity instanceof ClientIdentity.Psk p && (tls.psk == null || tls.psk.key(p.identity()) == null)) {
            throw new IllegalArgumentException(what + " names PSK identity " + identity + ", which has no key in"
                + " this tail's nbd.tls.pskFile");
        }
    }

    /**
     * Whether {@code client} may open {@code volume}. A volume with an authorization entry needs one of its
     * identities (so never a client without TLS); any other follows {@code unlistedVolumes}.
     */
    public boolean authorizes(final String volume, final ClientIdentity client) {
        final Set<ClientIdentity> allowed = authorization.get(volume);
        if (allowed != null) {
            return client != null && allowed.contains(client);
        }
        return allowUnlisted;
    }
}
