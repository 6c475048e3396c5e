package io.nbdtail.it;

import io.nbdtail.nbd.client.NbdClient;
import io.nbdtail.nbd.client.NbdClientException;
import io.nbdtail.nbd.engine.NbdServerConfig;
import io.nbdtail.nbd.tls.ClientTls;
import io.nbdtail.nbd.tls.ClientTlsConfig;
import io.nbdtail.testing.ExternalTool;
import io.nbdtail.testing.TestPki;
import io.nbdtail.testing.TestServer;
import io.netty.channel.EventLoopGroup;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static io.nbdtail.it.NbdClientIT.SIZE;
import static io.nbdtail.it.NbdClientIT.exercise;
import static io.nbdtail.nbd.protocol.NbdConstants.REP_ERR_POLICY;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * The mirror's NBD client with STARTTLS: X.509 and PSK against our server, nbdkit and qemu-nbd (both GnuTLS), and
 * every way the handshake must fail: a server without TLS, a server certificate for another name or from another
 * CA, a client certificate the server does not trust, an unknown PSK identity, a wrong key. Certificates are made
 * by the test ({@link TestPki}).
 */
class NbdClientTlsIT {
    @TempDir
    static Path dir;
    static EventLoopGroup group;
    static TestServer x509;
    static TestServer psk;
    static TestServer plain;
    static TestServer elsewhere;
    static Path serverDir;
    static Path clientDir;
    static Path rogueClientDir;
    static Path trustsRogueDir;
    static Path serverKeys;
    static Path clientKeys;
    static Path wrongKey;
    static Path unknownIdentity;

    @BeforeAll
    static void start() throws Exception {
        final TestPki pki = TestPki.create(dir.resolve("pki"), "nbdtail-test-ca");
        final TestPki rogue = TestPki.create(dir.resolve("rogue"), "rogue-ca");
        serverDir = pki.server("server", pki);
        clientDir = pki.client("client", "CN=tail-3,O=Storage", pki.caCert());
        rogueClientDir = rogue.client("rogue-client", "CN=tail-3,O=Storage", pki.caCert());
        trustsRogueDir = pki.client("trusts-rogue", "CN=tail-3,O=Storage", rogue.caCert());
        final Path elsewhereDir = pki.server("elsewhere", pki, "dns:elsewhere.example");

        final String line = "tail-3:" + key();
        serverKeys = Files.write(dir.resolve("server.psk"), List.of("tail-9:" + key(), line));
        clientKeys = keys("client", line);
        wrongKey = keys("wrong", "tail-3:" + key());
        unknownIdentity = keys("unknown", "tail-7:" + key());

        x509 = server("x509", "required", serverDir, null);
        psk = server("psk", "required", null, serverKeys);
        plain = server("plain", "off", null, null);
        elsewhere = server("elsewhere", "required", elsewhereDir, null);
        x509.createVolume("big", SIZE);
        psk.createVolume("big", SIZE);
        group = NbdClient.newGroup(1);
    }

    private static TestServer server(final String name, final String mode, final Path certificates,
                                     final Path keys) throws Exception {
        final NbdServerConfig config = new NbdServerConfig();
        config.eventLoopThreads = 1;
        config.storageThreads = 2;
        config.tls.mode = mode;
        config.tls.certificates = certificates == null ? null : certificates.toString();
        config.tls.pskFile = keys == null ? null : keys.toString();
        final TestServer server = TestServer.start(dir.resolve(name), config);
        server.createVolume("v", SIZE);
        return server;
    }

    private static String key() {
        final byte[] k = new byte[32];
        new SecureRandom().nextBytes(k);
        return HexFormat.of().formatHex(k);
    }

    /** {@code DIR/keys.psk}, the file name qemu wants. */
    private static Path keys(final String name, final String line) throws Exception {
        final Path d = Files.createDirectories(dir.resolve(name));
        return Files.write(d.resolve("keys.psk"), List.of(line));
    }

    @AfterAll
    static void stop() throws Exception {
        for (final TestServer s : new TestServer[] {x509, psk, plain, elsewhere}) {
            if (s != null) {
                s.close();
            }
        }
        group.shutdownGracefully(0, 1, TimeUnit.SECONDS).sync();
    }

    static ClientTls certificates(final Path clientDir) throws Exception {
        final ClientTlsConfig config = new ClientTlsConfig();
        config.mode = "required";
        config.certificates = clientDir.toString();
        return ClientTls.create(config, "mirror.tls");
    }

    static ClientTls psk(final Path keys, final String identity) throws Exception {
        final ClientTlsConfig config = new ClientTlsConfig();
        config.mode = "required";
        config.pskFile = keys.toString();
        config.pskIdentity = identity;
        return ClientTls.create(config, "mirror.tls");
    }

    private static NbdClient connect(final String host, final int port, final String export, final ClientTls tls)
        throws Exception {
        final NbdClient.Options options = new NbdClient.Options();
        options.exportName = export;
        options.tls = tls;
        return NbdClient.connect(group, new InetSocketAddress(host, port), options);
    }

    private static void assertTlsRefused(final Throwable e) {
        assertThat(e).isInstanceOf(NbdClientException.class);
        final NbdClientException n = (NbdClientException) e;
        assertThat(n.tlsRefused()).as("TLS refusal: %s", n.getMessage()).isTrue();
        assertThat(n.answered()).isTrue();
        assertThat(n.getMessage()).startsWith("TLS with ");
    }

    @Test
    void shouldReadAndWriteThroughX509AgainstOurServer() throws Exception {
        try (NbdClient client = connect("127.0.0.1", x509.port(), "v", certificates(clientDir))) {
            assertThat(client.size()).isEqualTo(SIZE);
            assertThat(client.structuredReplies()).isTrue();
            exercise(client);
        }
        // The certificate names localhost too.
        try (NbdClient client = connect("localhost", x509.port(), "v", certificates(clientDir))) {
            client.flush().get(10, TimeUnit.SECONDS);
        }
    }

    @Test
    void shouldReadAndWriteThroughPskAgainstOurServer() throws Exception {
        // The file has one line, so the identity can be left out.
        try (NbdClient client = connect("127.0.0.1", psk.port(), "v", psk(clientKeys, null))) {
            assertThat(client.size()).isEqualTo(SIZE);
            exercise(client);
        }
    }

    /**
     * 1 MiB writes, 16 in flight (what the mirror sends), over both kinds of TLS, compared with the volume's file.
     * Before the server stopped reading large payloads straight from the socket under TLS, most such connections
     * failed with "Input record too big": the socket had read ciphertext into the payload buffer, behind the TLS
     * handler.
     */
    @Test
    void shouldCarryLargeWritesManyInFlight() throws Exception {
        final byte[] data = new byte[1 << 20];
        new java.util.Random(3).nextBytes(data);
        for (final TestServer server : new TestServer[] {x509, psk}) {
            for (int round = 0; round < 3; round++) {
                try (NbdClient client = server == x509 ? connect("127.0.0.1", x509.port(), "big",
                    certificates(clientDir)) : connect("127.0.0.1", psk.port(), "big", psk(clientKeys, null))) {
                    final List<java.util.concurrent.CompletableFuture<Void>> writes = new ArrayList<>();
                    for (int i = 0; i < 16; i++) {
                        data[0] = (byte) (i + round);
                        writes.add(client.write((long) i << 20, io.netty.buffer.Unpooled.copiedBuffer(data), false));
                    }
                    for (final var w : writes) {
                        w.get(60, TimeUnit.SECONDS);
                    }
                    client.flush().get(60, TimeUnit.SECONDS);
                }
                final byte[] file = Files.readAllBytes(server.dataFile("big"));
                for (int i = 0; i < 16; i++) {
                    data[0] = (byte) (i + round);
                    assertThat(java.util.Arrays.equals(file, i << 20, (i + 1) << 20, data, 0, data.length))
                        .as("MiB %d of round %d", i, round).isTrue();
                }
            }
        }
    }

    @Test
    void shouldRefuseAServerWithoutTlsAndNeverFallBack() {
        assertThatThrownBy(() -> connect("127.0.0.1", plain.port(), "v", certificates(clientDir)))
            .isInstanceOf(NbdClientException.class)
            .hasMessageContaining("refused TLS (STARTTLS answered ERR_POLICY")
            .hasMessageContaining("never falls back to plaintext")
            .satisfies(e -> assertThat(((NbdClientException) e).optionReply()).isEqualTo(REP_ERR_POLICY))
            .satisfies(e -> assertThat(((NbdClientException) e).answered()).isTrue());
    }

    @Test
    void shouldRefuseAServerCertificateForAnotherName() {
        assertThatThrownBy(() -> connect("127.0.0.1", elsewhere.port(), "v", certificates(clientDir)))
            .satisfies(NbdClientTlsIT::assertTlsRefused)
            .hasMessageContaining("127.0.0.1");
    }

    @Test
    void shouldRefuseAServerCertificateFromAnotherCa() {
        assertThatThrownBy(() -> connect("127.0.0.1", x509.port(), "v", certificates(trustsRogueDir)))
            .satisfies(NbdClientTlsIT::assertTlsRefused);
    }

    @Test
    void shouldReportAClientCertificateTheServerDoesNotTrust() {
        // TLS 1.3: the server's refusal arrives after our side finished its handshake.
        assertThatThrownBy(() -> connect("127.0.0.1", x509.port(), "v", certificates(rogueClientDir)))
            .satisfies(NbdClientTlsIT::assertTlsRefused);
    }

    @Test
    void shouldReportAWrongKeyOrAnUnknownIdentity() {
        assertThatThrownBy(() -> connect("127.0.0.1", psk.port(), "v", psk(wrongKey, "tail-3")))
            .satisfies(NbdClientTlsIT::assertTlsRefused);
        assertThatThrownBy(() -> connect("127.0.0.1", psk.port(), "v", psk(unknownIdentity, null)))
            .satisfies(NbdClientTlsIT::assertTlsRefused);
        // X.509 client against a PSK server: no common ground.
        assertThatThrownBy(() -> connect("127.0.0.1", psk.port(), "v", certificates(clientDir)))
            .satisfies(NbdClientTlsIT::assertTlsRefused);
    }

    @Test
    void shouldRefuseAConfigurationThatCannotWork() throws Exception {
        final ClientTlsConfig both = new ClientTlsConfig();
        both.mode = "required";
        both.certificates = clientDir.toString();
        both.pskFile = serverKeys.toString();
        assertThatThrownBy(() -> ClientTls.create(both, "mirror.tls")).hasMessageContaining("exactly one of");
        final ClientTlsConfig optional = new ClientTlsConfig();
        optional.mode = "optional";
        assertThatThrownBy(() -> ClientTls.create(optional, "mirror.tls")).hasMessageContaining("use off or required");
        // Two identities and none named.
        assertThatThrownBy(() -> psk(serverKeys, null)).hasMessageContaining("mirror.tls.pskIdentity");
        assertThatThrownBy(() -> psk(serverKeys, "nobody")).hasMessageContaining("'nobody' has no key");
        // The server's directory has no client certificate.
        assertThatThrownBy(() -> certificates(serverDir)).hasMessageContaining("client-cert.pem");
        assertThat(ClientTls.create(new ClientTlsConfig(), "mirror.tls")).isNull();
    }

    @Test
    void shouldWorkAgainstNbdkitWithX509AndPsk() throws Exception {
        ExternalTool.requireTool("nbdkit");
        final Path gnutlsDir = gnutlsServerDir("nbdkit-x509");
        try (NbdClientIT.External nbdkit = NbdClientIT.External.start("nbdkit", "--foreground",
            "--exit-with-parent", "-i", "127.0.0.1", "-p", "%PORT%", "--tls=require", "--tls-certificates="
                + gnutlsDir, "--tls-verify-peer", "memory", String.valueOf(SIZE))) {
            try (NbdClient client = connect("127.0.0.1", nbdkit.port, "", certificates(clientDir))) {
                exercise(client);
            }
            // GnuTLS refuses the certificate after the handshake by closing the connection, without an alert:
            // the handshake fails, but not distinguishably from a reset.
            assertThatThrownBy(() -> connect("127.0.0.1", nbdkit.port, "", certificates(rogueClientDir)))
                .isInstanceOf(NbdClientException.class);
        }
        try (NbdClientIT.External nbdkit = NbdClientIT.External.start("nbdkit", "--foreground",
            "--exit-with-parent", "-i", "127.0.0.1", "-p", "%PORT%", "--tls=require", "--tls-psk=" + serverKeys,
            "memory", String.valueOf(SIZE))) {
            try (NbdClient client = connect("127.0.0.1", nbdkit.port, "", psk(clientKeys, "tail-3"))) {
                exercise(client);
            }
            // Here too GnuTLS closes without an alert.
            assertThatThrownBy(() -> connect("127.0.0.1", nbdkit.port, "", psk(wrongKey, "tail-3")))
                .isInstanceOf(NbdClientException.class);
        }
    }

    @Test
    void shouldWorkAgainstQemuNbdWithX509AndPsk() throws Exception {
        ExternalTool.requireTool("qemu-nbd");
        final Path image = dir.resolve("qemu.raw");
        try (var file = new java.io.RandomAccessFile(image.toFile(), "rw")) {
            file.setLength(SIZE);
        }
        final Path gnutlsDir = gnutlsServerDir("qemu-x509");
        try (NbdClientIT.External qemu = qemuNbd(image, "tls-creds-x509,id=tls0,endpoint=server,dir=" + gnutlsDir
            + ",verify-peer=on")) {
            try (NbdClient client = connect("127.0.0.1", qemu.port, "q", certificates(clientDir))) {
                exercise(client);
            }
        }
        try (NbdClientIT.External qemu = qemuNbd(image, "tls-creds-psk,id=tls0,endpoint=server,dir="
            + Files.createDirectories(dir.resolve("qemu-psk")).resolve(Files.copy(serverKeys,
                dir.resolve("qemu-psk").resolve("keys.psk")).getFileName()).getParent())) {
            try (NbdClient client = connect("127.0.0.1", qemu.port, "q", psk(clientKeys, "tail-3"))) {
                exercise(client);
            }
        }
    }

    private static NbdClientIT.External qemuNbd(final Path image, final String creds) throws Exception {
        final List<String> command = new ArrayList<>(List.of("qemu-nbd", "--object", creds, "--tls-creds", "tls0",
            "-f", "raw", "-b", "127.0.0.1", "-p", "%PORT%", "-x", "q", "-t", image.toString()));
        return NbdClientIT.External.start(command.toArray(String[]::new));
    }

    /**
     * The server's directory for a GnuTLS server: GnuTLS 3.7 cannot read the JDK's PKCS#8 encoding of an EC key,
     * so the key is rewritten as SEC1 by openssl (nbdtail reads either).
     */
    private static Path gnutlsServerDir(final String name) throws Exception {
        final Path out = Files.createDirectories(dir.resolve(name));
        for (final String f : List.of("ca-cert.pem", "server-cert.pem")) {
            Files.copy(serverDir.resolve(f), out.resolve(f));
        }
        ExternalTool.run("openssl", "ec", "-in", serverDir.resolve("server-key.pem").toString(), "-out",
            out.resolve("server-key.pem").toString()).assertSuccess();
        return out;
    }
}
