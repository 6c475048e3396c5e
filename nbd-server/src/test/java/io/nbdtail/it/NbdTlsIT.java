package io.nbdtail.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.nbdtail.nbd.engine.NbdServerConfig;
import io.nbdtail.testing.ExternalTool;
import io.nbdtail.testing.RawNbdClient;
import io.nbdtail.testing.TestPki;
import io.nbdtail.testing.TestServer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLException;
import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static io.nbdtail.nbd.protocol.NbdConstants.*;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * NBD_OPT_STARTTLS with X.509 certificates against qemu ({@code tls-creds-x509}), libnbd ({@code nbds://}) and a
 * raw client that does what real clients never do. The certificates are made by the test ({@link TestPki}).
 *
 * <p>Two servers: {@code required} (FORCEDTLS: vol-a for Tenant A's certificate, vol-b for Tenant B's, shared for
 * any client with a certificate from the CA) and {@code optional} (vol-a for Tenant A, shared for everyone,
 * with or without TLS).
 */
class NbdTlsIT {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long SIZE = 16L << 20;

    @TempDir
    static Path dir;
    static Path clientA;
    static Path clientB;
    static Path rogueA;
    static Path expiredA;
    static TestServer required;
    static TestServer optional;

    @BeforeAll
    static void start() throws Exception {
        final TestPki pki = TestPki.create(dir.resolve("pki"), "nbdtail-test-ca");
        final TestPki rogue = TestPki.create(dir.resolve("rogue"), "rogue-ca");
        final Path serverDir = pki.server("server", pki);
        clientA = pki.client("tenant-a", "CN=host-a,O=Tenant A", pki.caCert());
        clientB = pki.client("tenant-b", "CN=host-b,O=Tenant B", pki.caCert());
        // The same subject as Tenant A, signed by a CA the server does not trust.
        rogueA = rogue.client("rogue-a", "CN=host-a,O=Tenant A", pki.caCert());
        expiredA = pki.expiredClient("expired-a", "CN=host-a,O=Tenant A", pki.caCert());

        required = TestServer.start(dir.resolve("required"), config("required", serverDir,
            // Written with spaces and lower case on purpose: subjects compare as X.500 names, not strings.
            Map.of("vol-a", List.of("dn:cn=host-a, o=Tenant A"), "vol-b", List.of("dn:CN=host-b,O=Tenant B"))));
        required.createVolume("vol-a", SIZE);
        required.createVolume("vol-b", SIZE);
        required.createVolume("shared", SIZE);
        optional = TestServer.start(dir.resolve("optional"), config("optional", serverDir,
            Map.of("vol-a", List.of("dn:CN=host-a,O=Tenant A"))));
        optional.createVolume("vol-a", SIZE);
        optional.createVolume("shared", SIZE);
    }

    private static NbdServerConfig config(final String mode, final Path certificates,
                                          final Map<String, List<String>> authorization) {
        final NbdServerConfig config = new NbdServerConfig();
        config.eventLoopThreads = 1;
        config.storageThreads = 2;
        config.tls.mode = mode;
        config.tls.certificates = certificates.toString();
        config.tls.authorization = authorization;
        return config;
    }

    @AfterAll
    static void stop() throws Exception {
        if (required != null) {
            required.close();
        }
        if (optional != null) {
            optional.close();
        }
    }

    private static String nbds(final TestServer server, final String export, final Path client) {
        return "nbds://127.0.0.1:" + server.port() + "/" + export + "?tls-certificates=" + client;
    }

    private static List<String> qemu(final String tool, final TestServer server, final String export,
                                     final Path client, final String... more) {
        final List<String> command = ExternalTool.args(tool);
        command.addAll(List.of(more));
        command.addAll(List.of("--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + client, "--image-opts",
            "driver=nbd,host=127.0.0.1,port=" + server.port() + ",export=" + export + ",tls-creds=tls0"));
        return command;
    }

    @Test
    void qemuReadsAndWritesOverTlsWithAnAuthorisedCertificate() throws Exception {
        final JsonNode info = JSON.readTree(ExternalTool.run(qemu("qemu-img", required, "vol-a", clientA, "info",
            "--output=json")).assertSuccess().stdout());
        assertThat(info.get("virtual-size").asLong()).isEqualTo(SIZE);

        // 4 MiB out and back through TLS records, then the bytes in the backing file.
        final List<String> io = qemu("qemu-io", required, "vol-a", clientA, "-c", "write -P 0xa5 1M 4M", "-c",
            "read -P 0xa5 1M 4M", "-c", "flush");
        final String out = ExternalTool.run(io).assertSuccess().output();
        assertThat(out).doesNotContain("Pattern verification failed");
        try (RandomAccessFile f = new RandomAccessFile(required.dataFile("vol-a").toFile(), "r")) {
            final byte[] b = new byte[4 << 20];
            f.seek(1 << 20);
            f.readFully(b);
            for (final byte x : b) {
                assertThat(x).isEqualTo((byte) 0xa5);
            }
        }
    }

    @Test
    void tls12WorksToo() {
        final List<String> command = ExternalTool.args("qemu-io", "--object", "tls-creds-x509,id=tls0,endpoint=client,"
            + "dir=" + clientA + ",priority=NORMAL:-VERS-TLS1.3", "--image-opts", "driver=nbd,host=127.0.0.1,port="
            + required.port() + ",export=vol-a,tls-creds=tls0", "-c", "write -P 0x11 8M 1M", "-c",
            "read -P 0x11 8M 1M");
        assertThat(ExternalTool.run(command).assertSuccess().output()).doesNotContain("Pattern verification failed");
    }

    @Test
    void nbdinfoSeesOnlyTheVolumesItsCertificateMayOpen() throws Exception {
        final JsonNode info = JSON.readTree(ExternalTool.run("nbdinfo", "--json", nbds(required, "vol-a", clientA))
            .assertSuccess().stdout());
        assertThat(info.get("exports").get(0).get("export-size").asLong()).isEqualTo(SIZE);
        final String list = ExternalTool.run("nbdinfo", "--list", nbds(required, "", clientA)).assertSuccess()
            .stdout();
        assertThat(list).contains("export=\"vol-a\"", "export=\"shared\"").doesNotContain("vol-b");
        final String listB = ExternalTool.run("nbdinfo", "--list", nbds(required, "", clientB)).assertSuccess()
            .stdout();
        assertThat(listB).contains("export=\"vol-b\"", "export=\"shared\"").doesNotContain("vol-a");
    }

    @Test
    void aRefusedClientCannotTellWhetherTheVolumeExists() throws Exception {
        final ExternalTool.Result refused = ExternalTool.run("nbdinfo", nbds(required, "vol-a", clientB));
        final ExternalTool.Result missing = ExternalTool.run("nbdinfo", nbds(required, "no-such", clientB));
        assertThat(refused.exitCode()).isNotZero();
        assertThat(refused.stderr().replace("vol-a", "NAME")).isEqualTo(missing.stderr().replace("no-such", "NAME"));

        final List<String> refusedQemu = qemu("qemu-img", required, "vol-a", clientB, "info");
        final List<String> missingQemu = qemu("qemu-img", required, "no-such", clientB, "info");
        final ExternalTool.Result q1 = ExternalTool.run(refusedQemu);
        final ExternalTool.Result q2 = ExternalTool.run(missingQemu);
        assertThat(q1.exitCode()).isNotZero();
        assertThat(q1.stderr().replace("vol-a", "NAME")).isEqualTo(q2.stderr().replace("no-such", "NAME"));

        // Byte for byte on the wire, too: same reply type, same message shape.
        try (RawNbdClient c = tlsClient(required, clientB)) {
            final RawNbdClient.Reply a = c.request(OPT_INFO, RawNbdClient.infoData("vol-a"));
            final RawNbdClient.Reply b = c.request(OPT_INFO, RawNbdClient.infoData("no-such"));
            assertThat(a.type()).isEqualTo(REP_ERR_UNKNOWN).isEqualTo(b.type());
            assertThat(a.text().replace("vol-a", "NAME")).isEqualTo(b.text().replace("no-such", "NAME"));
        }
    }

    @Test
    void plaintextClientsGetTlsRequiredAndNothingElse() throws Exception {
        final ExternalTool.Result plain = ExternalTool.run("nbdinfo", "nbd://127.0.0.1:" + required.port() + "/vol-a");
        // libnbd 1.14 reports ERR_TLS_REQD as "Operation not supported"; the raw client below sees the code.
        assertThat(plain.exitCode()).isNotZero();
        assertThat(plain.stdout()).doesNotContain("size");

        try (RawNbdClient c = new RawNbdClient("127.0.0.1", required.port())) {
            for (final int option : new int[] {OPT_LIST, OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY,
                OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT, 99}) {
                final byte[] data = option == OPT_INFO || option == OPT_GO ? RawNbdClient.infoData("vol-a")
                    : new byte[0];
                assertThat(c.request(option, data).type()).as("option %d", option).isEqualTo(REP_ERR_TLS_REQD);
            }
            // EXPORT_NAME has no error reply: the server closes without sending the export's size.
            c.option(OPT_EXPORT_NAME, "vol-a".getBytes());
            assertThat(c.closedByServer()).isTrue();
        }
        try (RawNbdClient c = new RawNbdClient("127.0.0.1", required.port())) {
            assertThat(c.request(OPT_ABORT, new byte[0]).type()).isEqualTo(REP_ACK);
        }
    }

    @Test
    void certificatesTheServerDoesNotTrustFailTheTlsHandshake() throws Exception {
        assertThat(ExternalTool.run("nbdinfo", nbds(required, "vol-a", rogueA)).exitCode()).isNotZero();
        assertThat(ExternalTool.run(qemu("qemu-img", required, "vol-a", rogueA, "info")).exitCode()).isNotZero();
        // Tenant A's subject from the right CA, but expired (the JDK client does not check its own certificate,
        // so the server's check is what refuses it).
        try (RawNbdClient c = new RawNbdClient("127.0.0.1", required.port())) {
            assertThat(c.request(OPT_STARTTLS, new byte[0]).type()).isEqualTo(REP_ACK);
            assertThatThrownBy(() -> {
                c.startTls(TestPki.clientContext(expiredA), "127.0.0.1");
                c.request(OPT_LIST, new byte[0]);
            }).isInstanceOf(SSLException.class);
        }
        // No client certificate at all.
        final SSLContext anonymous = SSLContext.getInstance("TLS");
        anonymous.init(null, TestPki.clientContextTrustOnly(clientA), null);
        try (RawNbdClient c = new RawNbdClient("127.0.0.1", required.port())) {
            assertThat(c.request(OPT_STARTTLS, new byte[0]).type()).isEqualTo(REP_ACK);
            assertThatThrownBy(() -> {
                c.startTls(anonymous, "127.0.0.1");
                c.request(OPT_LIST, new byte[0]);
            }).isInstanceOf(SSLException.class);
        }
    }

    @Test
    void plaintextBytesPipelinedBehindStartTlsCloseTheConnection() throws Exception {
        try (RawNbdClient c = new RawNbdClient("127.0.0.1", required.port())) {
            // A man in the middle appends an option to the client's STARTTLS; it must never be read as if it had
            // come through TLS.
            c.option(OPT_STARTTLS, new byte[0], false);
            c.option(OPT_STRUCTURED_REPLY, new byte[0], true);
            assertThat(c.closedByServer()).isTrue();
        }
    }

    @Test
    void everythingNegotiatedInPlaintextIsForgottenAtStartTls() throws Exception {
        try (RawNbdClient c = new RawNbdClient("127.0.0.1", optional.port())) {
            assertThat(c.request(OPT_STRUCTURED_REPLY, new byte[0]).type()).isEqualTo(REP_ACK);
            assertThat(c.infoFlags("shared") & TFLAG_SEND_DF).isNotZero();
            assertThat(c.request(OPT_STARTTLS, new byte[0]).type()).isEqualTo(REP_ACK);
            c.startTls(TestPki.clientContext(clientA), "127.0.0.1");
            // Structured replies are off again (no DF), and may be negotiated again.
            assertThat(c.infoFlags("shared") & TFLAG_SEND_DF).isZero();
            assertThat(c.request(OPT_STRUCTURED_REPLY, new byte[0]).type()).isEqualTo(REP_ACK);
            assertThat(c.infoFlags("shared") & TFLAG_SEND_DF).isNotZero();
            assertThat(c.request(OPT_STARTTLS, new byte[0]).type()).isEqualTo(REP_ERR_INVALID);
            // Inside TLS Tenant A sees its volume.
            assertThat(c.infoFlags("vol-a")).isNotEqualTo(-1);
        }
    }

    /**
     * Back-pressure through TLS: 20,000 READs pipelined without reading replies. The server must stop reading
     * (bounded requests held) exactly as without TLS, and then answer every cookie once.
     */
    @Test
    void pipeliningWithoutReadingIsHeldBackThroughTlsToo() throws Exception {
        final int count = 20_000;
        try (RawNbdClient c = tlsClient(required, clientA)) {
            c.go("vol-a");
            final Thread writer = new Thread(() -> {
                try {
                    for (int i = 0; i < count; i++) {
                        c.outputStream().write(RawNbdClient.request(0, 0, i, (i * 4096L) % SIZE, 4096));
                    }
                    c.outputStream().flush();
                } catch (final java.io.IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            });
            writer.start();
            Thread.sleep(2_000);
            assertThat(required.export("vol-a").inFlightRequests()).as("requests held").isLessThanOrEqualTo(128);
            final java.util.BitSet seen = new java.util.BitSet(count);
            final byte[] data = new byte[4096];
            c.timeout(60_000);
            for (int i = 0; i < count; i++) {
                final long[] reply = c.simpleReply();
                assertThat(reply[1]).isZero();
                assertThat(seen.get((int) reply[0])).isFalse();
                seen.set((int) reply[0]);
                c.readFully(data);
            }
            assertThat(seen.cardinality()).isEqualTo(count);
            writer.join(10_000);
        }
    }

    @Test
    void optionalTlsHidesAuthorisedVolumesFromPlaintextClients() throws Exception {
        final String plain = "nbd://127.0.0.1:" + optional.port() + "/";
        assertThat(ExternalTool.run("nbdinfo", "--json", plain + "shared").assertSuccess().stdout())
            .contains("\"export-size\": " + SIZE);
        assertThat(ExternalTool.run("nbdinfo", "--list", plain).assertSuccess().stdout())
            .contains("export=\"shared\"").doesNotContain("vol-a");
        assertThat(ExternalTool.run("nbdinfo", plain + "vol-a").exitCode()).isNotZero();
        assertThat(ExternalTool.run("nbdinfo", "--json", nbds(optional, "vol-a", clientA)).assertSuccess().stdout())
            .contains("\"export-size\": " + SIZE);
        assertThat(ExternalTool.run(qemu("qemu-img", optional, "vol-a", clientA, "info")).assertSuccess().stdout())
            .contains("16 MiB");
    }

    private static RawNbdClient tlsClient(final TestServer server, final Path client) throws Exception {
        final RawNbdClient c = new RawNbdClient("127.0.0.1", server.port());
        assertThat(c.request(OPT_STARTTLS, new byte[0]).type()).isEqualTo(REP_ACK);
        c.startTls(TestPki.clientContext(client), "127.0.0.1");
        return c;
    }
}
