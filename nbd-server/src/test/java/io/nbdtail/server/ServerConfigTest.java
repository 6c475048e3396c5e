package io.nbdtail.server;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** The {@code mirror} section of the configuration file: the mirror's tuning and its {@code tls}. */
class ServerConfigTest {
    @TempDir
    Path dir;

    @Test
    void readsTheMirrorTuningAndItsTls() throws Exception {
        final Path file = Files.writeString(dir.resolve("c.json"), """
            {"mirror": {"convergeMillis": 500, "tls": {"mode": "required", "pskFile": "/etc/k.psk",
             "pskIdentity": "tail-3"}}}""");
        final ServerConfig config = ServerConfig.load(file);
        assertThat(config.mirror.convergeMillis).isEqualTo(500);
        assertThat(config.mirror.tls.required()).isTrue();
        assertThat(config.mirror.tls.pskIdentity).isEqualTo("tail-3");
        assertThat(new ServerConfig().mirror.tls.required()).isFalse();
    }

    @Test
    void aTypoInTheMirrorSectionIsAnError() throws Exception {
        final Path file = Files.writeString(dir.resolve("c.json"), """
            {"mirror": {"tls": {"mode": "required", "certificate": "/etc/nbdtail/tls"}}}""");
        assertThatThrownBy(() -> ServerConfig.load(file)).hasMessageContaining("certificate");
    }
}
