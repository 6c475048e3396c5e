package io.nbdtail.it;

import io.nbdtail.api.ApiConfig;
import io.nbdtail.server.NbdTail;
import io.nbdtail.server.ServerConfig;
import io.nbdtail.testing.ExternalTool;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLHandshakeException;
import javax.net.ssl.TrustManagerFactory;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The control API over TLS from a PKCS#12 keystore; the test makes its own certificate, none is committed. */
class ControlApiTlsIT {
    @TempDir
    Path dir;

    @Test
    void shouldServeTheApiOverTlsWithAPkcs12Keystore() throws Exception {
        final Path keystore = dir.resolve("api.p12");
        final String keytool = Path.of(System.getProperty("java.home"), "bin", "keytool").toString();
        ExternalTool.run(keytool, "-genkeypair", "-alias", "api", "-keyalg", "EC", "-groupname", "secp256r1",
            "-dname", "CN=localhost", "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-validity", "2",
            "-storetype", "PKCS12", "-keystore", keystore.toString(), "-storepass", "secret123",
            "-keypass", "secret123").assertSuccess();
        Files.writeString(dir.resolve("api.pass"), "secret123\n");

        final ServerConfig config = new ServerConfig();
        config.nbd.eventLoopThreads = 1;
        config.nbd.storageThreads = 2;
        config.nbd.conclude();
        config.api.tls = new ApiConfig.Tls();
        config.api.tls.keystore = keystore.toString();
        config.api.tls.passwordFile = dir.resolve("api.pass").toString();
        try (NbdTail tail = NbdTail.open(dir.resolve("data"), config)) {
            final int port = tail.startApi("127.0.0.1", 0).getPort();
            final String token = Files.readString(dir.resolve("data/api-token")).trim();

            final KeyStore trust = KeyStore.getInstance("PKCS12");
            try (InputStream in = Files.newInputStream(keystore)) {
                trust.load(in, "secret123".toCharArray());
            }
            final TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            tmf.init(trust);
            final SSLContext ssl = SSLContext.getInstance("TLS");
            ssl.init(null, tmf.getTrustManagers(), null);
            final HttpClient https = HttpClient.newBuilder().sslContext(ssl).build();
            final HttpResponse<String> r = https.send(HttpRequest.newBuilder(URI.create("https://127.0.0.1:" + port
                + "/v1/status")).header("Authorization", "Bearer " + token).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(r.statusCode()).isEqualTo(200);
            assertThat(r.body()).contains("\"health\":\"ok\"");

            // A client that does not trust the certificate cannot talk to it, and plain HTTP gets nothing.
            assertThatThrownBy(() -> HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create("https://127.0.0.1:"
                + port + "/v1/status")).build(), HttpResponse.BodyHandlers.ofString()))
                .isInstanceOf(SSLHandshakeException.class);
            assertThatThrownBy(() -> HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:"
                + port + "/v1/status")).timeout(java.time.Duration.ofSeconds(3)).header("Authorization", "Bearer " + token)
                .build(), HttpResponse.BodyHandlers.ofString())).isInstanceOf(java.io.IOException.class);
        }
    }
}
