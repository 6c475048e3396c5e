package io.nbdtail.testing;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.Key;
import java.security.KeyStore;
import java.security.interfaces.ECPrivateKey;
import java.security.interfaces.ECPublicKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.util.Base64;
import java.util.List;

/**
 * A throw-away PKI for TLS tests, made with the JDK's keytool so that no key is ever committed: a CA, a server
 * certificate for 127.0.0.1, and client certificates, each written as a directory in the layout qemu, libnbd,
 * nbdkit and nbdtail read ({@code ca-cert.pem}, {@code server-cert.pem}/{@code server-key.pem} or
 * {@code client-cert.pem}/{@code client-key.pem}). Keys are unencrypted; certificates are valid
 * for two days. Keys are EC P-256 (GnuTLS 3.7 does not offer an RSA client certificate to a TLS 1.3 server
 * whose CertificateRequest lists only RSA-PSS, as the JDK's does).
 */
public final class TestPki {
    private static final String PASSWORD = "test-only";
    private static final String KEYTOOL = Path.of(System.getProperty("java.home"), "bin", "keytool").toString();

    private final Path dir;
    private final String caName;
    private final Path caStore;

    private TestPki(final Path dir, final String caName) {
        this.dir = dir;
        this.caName = caName;
        this.caStore = dir.resolve(caName + ".p12");
    }

    /** A new CA called {@code caName} whose files live under {@code dir}. */
    public static TestPki create(final Path dir, final String caName) throws Exception {
        Files.createDirectories(dir);
        final TestPki pki = new TestPki(dir, caName);
        keytool("-genkeypair", "-alias", "ca", "-keyalg", "EC", "-groupname", "secp256r1", "-dname",
            "CN=" + caName, "-sigalg", "SHA256withECDSA", "-ext", "bc:c", "-ext", "KU=keyCertSign,cRLSign",
            "-validity", "2", "-storetype", "PKCS12", "-keystore", pki.caStore.toString(), "-storepass", PASSWORD,
            "-keypass", PASSWORD);
        keytool("-exportcert", "-rfc", "-alias", "ca", "-keystore", pki.caStore.toString(), "-storepass", PASSWORD,
            "-file", pki.caCert().toString());
        return pki;
    }

    public Path caCert() {
        return dir.resolve(caName + "-cert.pem");
    }

    /** {@code DIR/NAME/} with ca-cert.pem, server-cert.pem, server-key.pem for 127.0.0.1 and localhost. */
    public Path server(final String name, final TestPki trustedClients) throws Exception {
        return server(name, trustedClients, "ip:127.0.0.1,dns:localhost");
    }

    /** Like {@link #server(String, TestPki)}, for the names and addresses {@code san} (keytool's SAN syntax). */
    public Path server(final String name, final TestPki trustedClients, final String san) throws Exception {
        return leaf(name, "CN=localhost", "server", List.of("-ext", "SAN=" + san, "-ext",
            "KU=digitalSignature,keyEncipherment", "-ext", "EKU=serverAuth"), trustedClients.caCert());
    }

    /**
     * {@code DIR/NAME/} as a tail's own directory in qemu's layout: ca-cert.pem (this CA), server-cert.pem and
     * server-key.pem for {@code san}, client-cert.pem and client-key.pem for the subject {@code dn}.
     */
    public Path tail(final String name, final String dn, final String san) throws Exception {
        final Path server = server(name + "-server", this, san);
        final Path client = client(name + "-client", dn, caCert());
        final Path out = Files.createDirectories(dir.resolve(name));
        for (final Path f : List.of(server.resolve("ca-cert.pem"), server.resolve("server-cert.pem"),
            server.resolve("server-key.pem"), client.resolve("client-cert.pem"), client.resolve("client-key.pem"))) {
            Files.copy(f, out.resolve(f.getFileName()));
        }
        Files.copy(client.resolve("key.p12"), out.resolve("key.p12"));
        return out;
    }

    /**
     * {@code DIR/NAME/} with ca-cert.pem (this CA unless {@code serverCa} says otherwise), client-cert.pem and
     * client-key.pem for the subject {@code dn}.
     */
    public Path client(final String name, final String dn, final Path serverCa) throws Exception {
        return leaf(name, dn, "client", List.of("-ext", "KU=digitalSignature,keyEncipherment", "-ext",
            "EKU=clientAuth"), serverCa);
    }

    /** Like {@link #client}, but the certificate expired yesterday. */
    public Path expiredClient(final String name, final String dn, final Path serverCa) throws Exception {
        return leaf(name, dn, "client", List.of("-ext", "KU=digitalSignature,keyEncipherment", "-ext",
            "EKU=clientAuth", "-startdate", "-3d", "-validity", "1"), serverCa);
    }

    private Path leaf(final String name, final String dn, final String role, final List<String> ext,
                      final Path ca) throws Exception {
        final Path out = Files.createDirectories(dir.resolve(name));
        final Path store = dir.resolve(name + ".p12");
        final Path csr = dir.resolve(name + ".csr");
        keytool("-genkeypair", "-alias", "key", "-keyalg", "EC", "-groupname", "secp256r1", "-dname", dn,
            "-validity", "2", "-storetype", "PKCS12", "-keystore", store.toString(), "-storepass", PASSWORD,
            "-keypass", PASSWORD);
        keytool("-certreq", "-alias", "key", "-keystore", store.toString(), "-storepass", PASSWORD, "-file",
            csr.toString());
        final List<String> gencert = new java.util.ArrayList<>(List.of("-gencert", "-rfc", "-alias", "ca",
            "-keystore", caStore.toString(), "-storepass", PASSWORD, "-infile", csr.toString(), "-outfile",
            out.resolve(role + "-cert.pem").toString(),
            // keytool's default for P-256 is SHA384withECDSA, which GnuTLS will not match against TLS 1.3's
            // ecdsa_secp256r1_sha256 and then sends no client certificate at all.
            "-sigalg", "SHA256withECDSA"));
        gencert.addAll(ext);
        if (!ext.contains("-validity")) {
            gencert.addAll(List.of("-validity", "2"));
        }
        keytool(gencert.toArray(String[]::new));
        final KeyStore ks = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(store)) {
            ks.load(in, PASSWORD.toCharArray());
        }
        final Key key = ks.getKey("key", PASSWORD.toCharArray());
        if (role.equals("server")) {
            // What nbdtail reads: PKCS#8.
            Files.writeString(out.resolve(role + "-key.pem"), pem("PRIVATE KEY", key.getEncoded()));
        } else {
            // What GnuTLS 3.7 (qemu, libnbd) reads: SEC1 with the public point. It cannot parse the JDK's PKCS#8
            // encoding of an EC key, which leaves the public point out.
            Files.writeString(out.resolve(role + "-key.pem"), pem("EC PRIVATE KEY", sec1((ECPrivateKey) key,
                (ECPublicKey) ks.getCertificate("key").getPublicKey())));
        }
        Files.copy(ca, out.resolve("ca-cert.pem"));
        Files.copy(store, out.resolve("key.p12"));
        return out;
    }

    private static String pem(final String type, final byte[] der) {
        return "-----BEGIN " + type + "-----\n" + Base64.getMimeEncoder(64, "\n".getBytes(StandardCharsets.US_ASCII))
            .encodeToString(der) + "\n-----END " + type + "-----\n";
    }

    /** RFC 5915 ECPrivateKey for a P-256 key: version 1, the scalar, the curve and the public point. */
    private static byte[] sec1(final ECPrivateKey key, final ECPublicKey pub) {
        final byte[] curve = {0x06, 0x08, 0x2a, (byte) 0x86, 0x48, (byte) 0xce, 0x3d, 0x03, 0x01, 0x07};
        final java.io.ByteArrayOutputStream b = new java.io.ByteArrayOutputStream();
        b.writeBytes(new byte[] {0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20});
        b.writeBytes(fixed(key.getS(), 32));
        b.writeBytes(new byte[] {(byte) 0xa0, 0x0a});
        b.writeBytes(curve);
        b.writeBytes(new byte[] {(byte) 0xa1, 0x44, 0x03, 0x42, 0x00, 0x04});
        b.writeBytes(fixed(pub.getW().getAffineX(), 32));
        b.writeBytes(fixed(pub.getW().getAffineY(), 32));
        return b.toByteArray();
    }

    private static byte[] fixed(final java.math.BigInteger n, final int length) {
        final byte[] raw = n.toByteArray();
        final byte[] out = new byte[length];
        final int copy = Math.min(raw.length, length);
        System.arraycopy(raw, raw.length - copy, out, length - copy, copy);
        return out;
    }

    /** A JDK client context from a client directory: its certificate and key, trusting its ca-cert.pem. */
    public static SSLContext clientContext(final Path clientDir) throws Exception {
        final CertificateFactory cf = CertificateFactory.getInstance("X.509");
        final Certificate cert;
        try (InputStream c = Files.newInputStream(clientDir.resolve("client-cert.pem"))) {
            cert = cf.generateCertificate(c);
        }
        final KeyStore store = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(clientDir.resolve("key.p12"))) {
            store.load(in, PASSWORD.toCharArray());
        }
        final KeyStore keys = KeyStore.getInstance("PKCS12");
        keys.load(null, null);
        keys.setKeyEntry("client", store.getKey("key", PASSWORD.toCharArray()), PASSWORD.toCharArray(),
            new Certificate[] {cert});
        final KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, PASSWORD.toCharArray());
        final SSLContext ssl = SSLContext.getInstance("TLS");
        ssl.init(kmf.getKeyManagers(), clientContextTrustOnly(clientDir), null);
        return ssl;
    }

    /** Trust managers for a client directory's ca-cert.pem only (a client without a certificate). */
    public static javax.net.ssl.TrustManager[] clientContextTrustOnly(final Path clientDir) throws Exception {
        final Certificate ca;
        try (InputStream a = Files.newInputStream(clientDir.resolve("ca-cert.pem"))) {
            ca = CertificateFactory.getInstance("X.509").generateCertificate(a);
        }
        final KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        trust.setCertificateEntry("ca", ca);
        final TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        return tmf.getTrustManagers();
    }

    private static void keytool(final String... args) {
        final String[] command = new String[args.length + 1];
        command[0] = KEYTOOL;
        System.arraycopy(args, 0, command, 1, args.length);
        ExternalTool.run(command).assertSuccess();
    }
}
