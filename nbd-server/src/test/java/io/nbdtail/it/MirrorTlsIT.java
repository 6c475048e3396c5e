package io.nbdtail.it;

import io.nbdtail.nbd.client.NbdClient;
import io.nbdtail.nbd.tls.ClientTls;
import io.nbdtail.nbd.tls.ClientTlsConfig;
import io.nbdtail.replication.MirrorRefusedException;
import io.nbdtail.replication.MirrorStatus;
import io.nbdtail.server.MirrorService;
import io.nbdtail.server.NbdTail;
import io.nbdtail.server.Ownership;
import io.nbdtail.server.ServerConfig;
import io.nbdtail.testing.TestPki;
import io.netty.buffer.Unpooled;
import io.netty.channel.EventLoopGroup;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * Mirrors between two in-process tails over TLS (issue #7): the source's every connection to the destination
 * (hello and data, commit) does STARTTLS first, with X.509 or PSK, and the destination checks the source's TLS
 * identity in addition to the secret. A writer uses the volume through its own service address over TLS and
 * replays across the cutover, as qemu with reconnect-delay does. Certificates and keys are made by the test.
 */
class MirrorTlsIT {
    private static final long SIZE = 32L << 20;
    private static final String TOKEN = "0123456789abcdef-secret";
    private static final String SAN = "ip:127.0.0.1,ip:127.0.0.11,ip:127.0.0.12,dns:localhost";

    @TempDir
    static Path pkiDir;
    static Path tailA;
    static Path tailB;
    static Path writerCert;
    static Path rogueA;
    static Path keys;
    static Path keysA;
    static Path wrongKeyA;
    static Path unknownKeys;

    @TempDir
    Path dir;
    final List<NbdTail> tails = new ArrayList<>();
    EventLoopGroup group;

    @BeforeAll
    static void pki() throws Exception {
        final TestPki pki = TestPki.create(pkiDir.resolve("pki"), "storage-ca");
        final TestPki rogue = TestPki.create(pkiDir.resolve("rogue"), "rogue-ca");
        // Each tail's own directory in qemu's layout: server and client certificate from one CA.
        tailA = pki.tail("tail-a", "CN=tail-a,O=Storage", SAN);
        tailB = pki.tail("tail-b", "CN=tail-b,O=Storage", SAN);
        writerCert = pki.client("qemu-host", "CN=qemu-host,O=Tenant", pki.caCert());
        // Trusts the right CA, but its own certificate (with the right subject) is signed by another.
        rogueA = rogue.client("rogue-a", "CN=tail-a,O=Storage", pki.caCert());
        final String a = "tail-a:" + key();
        keys = Files.write(pkiDir.resolve("tails.psk"), List.of(a, "tail-b:" + key(), "qemu-host:" + key()));
        keysA = Files.write(pkiDir.resolve("a.psk"), List.of(a));
        wrongKeyA = Files.write(pkiDir.resolve("wrong.psk"), List.of("tail-a:" + key()));
        unknownKeys = Files.write(pkiDir.resolve("unknown.psk"), List.of("tail-x:" + key()));
    }

    private static String key() {
        final byte[] k = new byte[32];
        new SecureRandom().nextBytes(k);
        return HexFormat.of().formatHex(k);
    }

    @AfterEach
    void stop() throws Exception {
        for (final NbdTail t : tails) {
            t.close();
        }
        if (group != null) {
            group.shutdownGracefully(0, 1, TimeUnit.SECONDS).sync();
        }
    }

    /** How one tail is set up: its NBD listener's TLS and its TLS as a mirror source. */
    private record Tls(String nbdMode, Path certificates, Path pskFile, String mirrorMode, Path mirrorCertificates,
                       Path mirrorPskFile, String mirrorPskIdentity) {
        static Tls x509(final Path own) {
            return new Tls("required", own, null, "required", own, null, null);
        }

        static Tls psk(final String identity, final Path mirrorKeys) {
            return new Tls("required", null, keys, "required", null, mirrorKeys, identity);
        }

        static final Tls NONE = new Tls("off", null, null, "off", null, null, null);
    }

    private NbdTail tail(final String name, final Tls tls, final Map<String, List<String>> authorization)
        throws Exception {
        final ServerConfig config = new ServerConfig();
        config.nbd.eventLoopThreads = 2;
        config.nbd.storageThreads = 4;
        config.nbd.tls.mode = tls.nbdMode();
        config.nbd.tls.certificates = tls.certificates() == null ? null : tls.certificates().toString();
        config.nbd.tls.pskFile = tls.pskFile() == null ? null : tls.pskFile().toString();
        if (authorization != null) {
            // Only the tenant's host may open the volume; nothing else is listed. The mirror must still get in.
            config.nbd.tls.authorization = authorization;
            config.nbd.tls.unlistedVolumes = "deny";
        }
        config.nbd.conclude();
        config.mirror.requestTimeoutMillis = 5_000;
        config.mirror.backoffMinMillis = 100;
        config.mirror.backoffMaxMillis = 500;
        config.mirror.tls.mode = tls.mirrorMode();
        config.mirror.tls.certificates = tls.mirrorCertificates() == null ? null : tls.mirrorCertificates().toString();
        config.mirror.tls.pskFile = tls.mirrorPskFile() == null ? null : tls.mirrorPskFile().toString();
        config.mirror.tls.pskIdentity = tls.mirrorPskIdentity();
        final NbdTail tail = NbdTail.open(dir.resolve(name), config);
        tails.add(tail);
        return tail;
    }

    private static MirrorService.Request request(final int port, final String token, final long rate) {
        return new MirrorService.Request("127.0.0.1:" + port, token, rate, null);
    }

    private static int freePort(final String host) throws IOException {
        try (ServerSocket socket = new ServerSocket(0, 1, InetAddress.getByName(host))) {
            return socket.getLocalPort();
        }
    }

    private static byte[] dataFile(final NbdTail tail, final String name) throws IOException {
        return Files.readAllBytes(tail.dataDir().resolve("volumes").resolve(name).resolve("data.raw"));
    }

    @Test
    void shouldMoveAVolumeUnderAWriterOverX509() throws Exception {
        moveUnderAWriter(Tls.x509(tailA), Tls.x509(tailB), "dn:CN=tail-a,O=Storage", "dn:CN=qemu-host,O=Tenant",
            "127.0.0.11", clientTls(writerCert, null, null));
    }

    @Test
    void shouldMoveAVolumeUnderAWriterOverPsk() throws Exception {
        moveUnderAWriter(Tls.psk("tail-a", keys), Tls.psk("tail-b", keys), "psk:tail-a", "psk:qemu-host",
            "127.0.0.12", clientTls(null, keys, "qemu-host"));
    }

    private static ClientTls clientTls(final Path certificates, final Path pskFile, final String identity)
        throws Exception {
        final ClientTlsConfig config = new ClientTlsConfig();
        config.mode = "required";
        config.certificates = certificates == null ? null : certificates.toString();
        config.pskFile = pskFile == null ? null : pskFile.toString();
        config.pskIdentity = identity;
        return ClientTls.create(config, "writer");
    }

    private void moveUnderAWriter(final Tls sourceTls, final Tls destinationTls, final String sourceIdentity,
                                  final String writerIdentity, final String host, final ClientTls writerTls)
        throws Exception {
        final Map<String, List<String>> onlyTheTenant = Map.of("vm", List.of(writerIdentity));
        final NbdTail source = tail("source", sourceTls, onlyTheTenant);
        source.listen("127.0.0.1", 0);
        final NbdTail destination = tail("destination", destinationTls, onlyTheTenant);
        final int destinationPort = destination.listen("127.0.0.1", 0).getPort();
        group = NbdClient.newGroup(1);

        source.volumes().create("vm", SIZE, null, "", false);
        final byte[] model = new byte[(int) SIZE];
        final byte[] initial = new byte[4 << 20];
        new Random(5).nextBytes(initial);
        source.volumes().export("vm").volume().write(ByteBuffer.wrap(initial), 8 << 20);
        System.arraycopy(initial, 0, model, 8 << 20, initial.length);
        final String address = host + ":" + freePort(host);
        source.addresses().set("vm", address);
        destination.mirrors().receive("vm", SIZE, TOKEN, null, sourceIdentity);

        final AtomicBoolean stop = new AtomicBoolean();
        final CompletableFuture<long[]> writer = CompletableFuture.supplyAsync(() ->
            write(new InetSocketAddress(host, Integer.parseInt(address.substring(host.length() + 1))), writerTls,
                model, stop));
        Thread.sleep(300);
        assertThat(source.mirrors().start("vm", request(destinationPort, TOKEN, 16L << 20)).state())
            .isIn("copying", "connecting");
        final MirrorStatus done = source.mirrors().job("vm").done().get(120, TimeUnit.SECONDS);
        assertThat(done.state()).as("final status %s", done).isEqualTo("moved");
        Thread.sleep(500);
        stop.set(true);
        final long[] counts = writer.get(60, TimeUnit.SECONDS);
        assertThat(counts[0]).as("acknowledged writes").isGreaterThan(10);
        assertThat(counts[1]).as("writes replayed across the cutover").isGreaterThan(0);
        assertThat(destination.volumes().ownership("vm").state()).isEqualTo(Ownership.SERVING);
        assertThat(source.volumes().ownership("vm").state()).isEqualTo(Ownership.MOVED);
        destination.volumes().export("vm").volume().flusher().syncNow();
        assertThat(Arrays.equals(dataFile(destination, "vm"), model))
            .as("destination equals every acknowledged write (%d writes)", counts[0]).isTrue();
    }

    /**
     * One write at a time to its own random place, over TLS; a write whose connection failed is sent again on a
     * new connection until acknowledged. Returns {acknowledged, replayed}.
     */
    private long[] write(final InetSocketAddress target, final ClientTls tls, final byte[] model,
                         final AtomicBoolean stop) {
        final Random random = new Random(7);
        long acked = 0;
        long replayed = 0;
        NbdClient client = null;
        try {
            while (!stop.get()) {
                final byte[] data = new byte[4096 * (1 + random.nextInt(16))];
                random.nextBytes(data);
                final long offset = 4096L * random.nextInt((int) ((SIZE - data.length) / 4096));
                for (int tries = 0; ; tries++) {
                    try {
                        if (client == null || !client.isOpen()) {
                            final NbdClient.Options options = new NbdClient.Options();
                            options.tls = tls;
                            options.connectTimeoutMillis = 2_000;
                            client = NbdClient.connect(group, target, options);
                        }
                        client.write(offset, Unpooled.wrappedBuffer(data), false).get(30, TimeUnit.SECONDS);
                        break;
                    } catch (final Exception e) {
                        if (tries > 600) {
                            throw new AssertionError("write never acknowledged after reconnects", e);
                        }
                        if (client != null) {
                            client.abort();
                            client = null;
                        }
                        replayed++;
                        Thread.sleep(50);
                    }
                }
                System.arraycopy(data, 0, model, (int) offset, data.length);
                acked++;
            }
            return new long[] {acked, replayed};
        } catch (final InterruptedException e) {
            throw new AssertionError(e);
        } finally {
            if (client != null) {
                client.close();
            }
        }
    }

    /** Refused synchronously, and neither side changed: the source serves without a mirror, the copy is empty. */
    private static void assertRefusedAndUntouched(final NbdTail source, final NbdTail destination, final int port,
                                                  final String token, final String message) throws Exception {
        assertThatThrownBy(() -> source.mirrors().start("vm", request(port, token, 0)))
            .isInstanceOf(MirrorRefusedException.class)
            .hasMessageContaining(message);
        assertThat(source.volumes().ownership("vm").state()).isEqualTo(Ownership.SERVING);
        assertThat(source.volumes().export("vm").volume().writeObserver()).isNull();
        source.volumes().export("vm").volume().write(ByteBuffer.wrap(new byte[] {1}), 0);
        assertThat(destination.volumes().ownership("vm").state()).isEqualTo(Ownership.RECEIVING);
        assertThat(destination.volumes().ownership("vm").written()).isFalse();
    }

    private static String refusal(final NbdTail source, final int port, final String token) {
        try {
            source.mirrors().start("vm", request(port, token, 0));
        } catch (final Exception e) {
            assertThat(e).isInstanceOf(MirrorRefusedException.class);
            return e.getMessage();
        }
        throw new AssertionError("the mirror started");
    }

    @Test
    void shouldRefuseAPlaintextSourceAtOnceWhenTheDestinationRequiresTls() throws Exception {
        final NbdTail destination = tail("destination", Tls.x509(tailB), null);
        final int port = destination.listen("127.0.0.1", 0).getPort();
        final NbdTail source = tail("source", Tls.NONE, null);
        source.volumes().create("vm", SIZE, null, "", false);
        destination.mirrors().receive("vm", SIZE, TOKEN, null);
        assertRefusedAndUntouched(source, destination, port, TOKEN, "requires TLS");
    }

    @Test
    void shouldRefuseADestinationWithoutTlsAtOnce() throws Exception {
        final NbdTail destination = tail("destination", Tls.NONE, null);
        final int port = destination.listen("127.0.0.1", 0).getPort();
        final NbdTail source = tail("source", Tls.x509(tailA), null);
        source.volumes().create("vm", SIZE, null, "", false);
        destination.mirrors().receive("vm", SIZE, TOKEN, null);
        assertRefusedAndUntouched(source, destination, port, TOKEN, "refused TLS (STARTTLS answered ERR_POLICY");
    }

    @Test
    void shouldRefuseAWrongCertificateOrIdentityAtOnce() throws Exception {
        final NbdTail destination = tail("destination", Tls.x509(tailB), null);
        final int port = destination.listen("127.0.0.1", 0).getPort();
        destination.mirrors().receive("vm", SIZE, TOKEN, null, "dn:CN=tail-a,O=Storage");
        // A certificate with the right subject from another CA: the TLS handshake fails.
        final NbdTail rogue = tail("rogue", new Tls("off", null, null, "required", rogueA, null, null), null);
        rogue.volumes().create("vm", SIZE, null, "", false);
        assertRefusedAndUntouched(rogue, destination, port, TOKEN, "TLS with 127.0.0.1:");
        // A valid certificate of another tail gets exactly the answer a wrong token gets.
        final NbdTail other = tail("other", Tls.x509(tailB), null);
        other.volumes().create("vm", SIZE, null, "", false);
        final NbdTail right = tail("right", Tls.x509(tailA), null);
        right.volumes().create("vm", SIZE, null, "", false);
        final String wrongIdentity = refusal(other, port, TOKEN);
        final String wrongToken = refusal(right, port, "another-secret-of-16+");
        assertThat(wrongIdentity).isEqualTo(wrongToken).contains("the token is wrong");
        assertRefusedAndUntouched(other, destination, port, TOKEN, "the token is wrong");
        // And the right one gets in.
        right.mirrors().start("vm", request(port, TOKEN, 0));
        assertThat(right.mirrors().job("vm").done().get(120, TimeUnit.SECONDS).state()).isEqualTo("moved");
    }

    @Test
    void shouldRefuseAWrongPskIdentityOrKeyAtOnce() throws Exception {
        final NbdTail destination = tail("destination", Tls.psk("tail-b", keys), null);
        final int port = destination.listen("127.0.0.1", 0).getPort();
        destination.mirrors().receive("vm", SIZE, TOKEN, null, "psk:tail-a");
        final NbdTail wrongKey = tail("wrong-key", Tls.psk("tail-a", wrongKeyA), null);
        wrongKey.volumes().create("vm", SIZE, null, "", false);
        assertRefusedAndUntouched(wrongKey, destination, port, TOKEN, "TLS with 127.0.0.1:");
        final NbdTail unknown = tail("unknown", Tls.psk(null, unknownKeys), null);
        unknown.volumes().create("vm", SIZE, null, "", false);
        assertRefusedAndUntouched(unknown, destination, port, TOKEN, "TLS with 127.0.0.1:");
        // tail-b holds a valid key, but is not the source the receive named.
        final NbdTail other = tail("other", Tls.psk("tail-b", keys), null);
        other.volumes().create("vm", SIZE, null, "", false);
        final NbdTail right = tail("right", Tls.psk(null, keysA), null);
        right.volumes().create("vm", SIZE, null, "", false);
        assertThat(refusal(other, port, TOKEN)).isEqualTo(refusal(right, port, "another-secret-of-16+"));
        right.mirrors().start("vm", request(port, TOKEN, 0));
        assertThat(right.mirrors().job("vm").done().get(120, TimeUnit.SECONDS).state()).isEqualTo("moved");
    }

    @Test
    void shouldRefuseASourceIdentityThatCouldNeverBeProved() throws Exception {
        final NbdTail plain = tail("plain", Tls.NONE, null);
        assertThatThrownBy(() -> plain.mirrors().receive("vm", SIZE, TOKEN, null, "dn:CN=tail-a"))
            .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("TLS is off");
        final NbdTail psk = tail("psk", Tls.psk("tail-b", keys), null);
        assertThatThrownBy(() -> psk.mirrors().receive("vm", SIZE, TOKEN, null, "dn:CN=tail-a"))
            .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("does not verify client certificates");
        assertThatThrownBy(() -> psk.mirrors().receive("vm", SIZE, TOKEN, null, "psk:tail-x"))
            .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("has no key");
        assertThatThrownBy(() -> psk.mirrors().receive("vm", SIZE, TOKEN, null, "tail-a"))
            .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("dn:SUBJECT");
        assertThat(psk.volumes().isHeld("vm")).isFalse();
    }
}
