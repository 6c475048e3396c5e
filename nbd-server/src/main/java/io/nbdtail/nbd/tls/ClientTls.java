package io.nbdtail.nbd.tls;

import io.netty.buffer.ByteBufAllocator;
import io.netty.channel.ChannelHandler;
import io.netty.handler.ssl.SslContext;
import io.netty.handler.ssl.SslContextBuilder;
import io.netty.handler.ssl.SslProvider;

import javax.net.ssl.SSLException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.PrivateKey;
import java.security.cert.X509Certificate;
import java.util.List;

/**
 * TLS for nbdtail as an NBD client (the source of a mirror), built once from {@link ClientTlsConfig}: a new
 * client-side TLS handler per connection, to be put in front of the NBD client after NBD_OPT_STARTTLS.
 *
 * <p>X.509 runs on Netty's SslHandler over the JDK's TLS 1.3 and 1.2: the server's certificate must chain to
 * {@code ca-cert.pem} and name the host the connection was made to (DNS name or IP address in its
 * subjectAltName, as an HTTPS client checks it), and the client presents {@code client-cert.pem}. PSK runs on
 * Bouncy Castle's engine ({@link PskTlsHandler}), as on the server.
 */
public final class ClientTls {
    private final SslContext x509;
    private final String pskIdentity;
    private final byte[] pskKey;
    private final String description;

    private ClientTls(final SslContext x509, final String pskIdentity, final byte[] pskKey,
                      final String description) {
        this.x509 = x509;
        this.pskIdentity = pskIdentity;
        this.pskKey = pskKey;
        this.description = description;
    }

    /**
     * Checks the configuration and loads the certificates or the key; {@code null} when TLS is off.
     *
     * @param setting the configuration key, for messages ({@code mirror.tls}).
     * @throws IllegalArgumentException naming what is wrong and how to fix it.
     */
    public static ClientTls create(final ClientTlsConfig config, final String setting) throws IOException {
        if (config == null || !config.required()) {
            return null;
        }
        final boolean certificates = config.certificates != null;
        final boolean keys = config.pskFile != null;
        if (certificates == keys) {
            throw new IllegalArgumentException(setting + ".mode is required: set exactly one of " + setting
                + ".certificates (a directory with ca-cert.pem, client-cert.pem, client-key.pem) and " + setting
                + ".pskFile (with " + setting + ".pskIdentity)");
        }
        if (certificates) {
            final Path dir = Path.of(config.certificates);
            return new ClientTls(x509Context(dir, setting), null, null, "X.509 (" + dir + ")");
        }
        final PskKeys psk = PskKeys.load(Path.of(config.pskFile), setting + ".pskFile");
        String identity = config.pskIdentity;
        if (identity == null) {
            final List<String> all = psk.identities();
            if (all.size() != 1) {
                throw new IllegalArgumentException(setting + ".pskFile " + config.pskFile + " has " + all.size()
                    + " identities; name the one this tail presents with " + setting + ".pskIdentity");
            }
            identity = all.getFirst();
        }
        final byte[] key = psk.key(identity);
        if (key == null) {
            throw new IllegalArgumentException(setting + ".pskIdentity '" + identity + "' has no key in "
                + config.pskFile);
        }
        return new ClientTls(null, identity, key, "PSK identity " + identity);
    }

    private static SslContext x509Context(final Path dir, final String setting) throws IOException {
        final Path ca = dir.resolve("ca-cert.pem");
        final Path cert = dir.resolve("client-cert.pem");
        final Path key = dir.resolve("client-key.pem");
        for (final Path p : List.of(ca, cert, key)) {
            if (!Files.isReadable(p)) {
                throw new IllegalArgumentException(setting + ".certificates: cannot read " + p + "; the directory"
                    + " needs ca-cert.pem (the CA of the destination tails' server certificates), client-cert.pem and"
                    + " client-key.pem (this tail's certificate and key, as qemu's tls-creds-x509 endpoint=client"
                    + " reads them)");
            }
        }
        final PrivateKey privateKey = PemFiles.privateKey(key, setting + ".certificates");
        final X509Certificate[] chain = PemFiles.certificates(cert, setting + ".certificates");
        final X509Certificate[] trusted = PemFiles.certificates(ca, setting + ".certificates");
        try {
            return SslContextBuilder.forClient()
                .sslProvider(SslProvider.JDK)
                .protocols(NbdTls.PROTOCOLS)
                .trustManager(trusted)
                .keyManager(privateKey, chain)
                .endpointIdentificationAlgorithm("HTTPS")
                .build();
        } catch (final SSLException | IllegalArgumentException e) {
            throw new IllegalArgumentException(setting + ".certificates: cannot use the files in " + dir + ": "
                + e.getMessage(), e);
        }
    }

    /**
     * A new TLS handler for one connection to {@code host} (the name or address the server's certificate must
     * carry) and {@code port}.
     */
    public ChannelHandler newHandler(final ByteBufAllocator alloc, final String host, final int port) {
        if (x509 != null) {
            return x509.newHandler(alloc, host, port);
        }
        return PskTlsHandler.client(pskIdentity, pskKey);
    }

    /** What this client presents, for messages: {@code X.509 (DIR)} or {@code PSK identity NAME}. */
    @Override
    public String toString() {
        return description;
    }
}
