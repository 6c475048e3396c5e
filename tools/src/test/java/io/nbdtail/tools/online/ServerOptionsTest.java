package io.nbdtail.tools.online;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/**
 * Where the server URL and the token come from: flag, then environment, then CLI config file, then default.
 * The environment is a map here (Java cannot set its own), so every level of the order is tested.
 */
class ServerOptionsTest {
    @TempDir
    Path tmp;

    private final Map<String, String> env = new HashMap<>();

    private ServerOptions options() {
        return new ServerOptions(env::get, tmp.resolve("home"));
    }

    private Path file(final String name, final String text) throws IOException {
        final Path path = tmp.resolve(name);
        Files.createDirectories(path.getParent());
        Files.writeString(path, text);
        return path;
    }

    @Test
    void shouldTakeTheServerFromFlagThenEnvironmentThenConfigThenDefault() throws Exception {
        assertThat(options().serverUrl()).isEqualTo("http://127.0.0.1:10810");

        // The default config file, when it exists.
        file("home/.config/nbdtail/cli.json", "{\"server\": \"http://config:1\"}");
        assertThat(options().serverUrl()).isEqualTo("http://config:1");

        env.put("NBDTAIL_SERVER", "http://env:2");
        assertThat(options().serverUrl()).isEqualTo("http://env:2");

        assertThat(options().flags("http://flag:3", null, null, null).serverUrl()).isEqualTo("http://flag:3");
    }

    @Test
    void shouldTakeTheConfigFileFromFlagThenEnvironmentThenXdgThenHome() throws Exception {
        file("home/.config/nbdtail/cli.json", "{\"server\": \"http://home:1\"}");
        file("xdg/nbdtail/cli.json", "{\"server\": \"http://xdg:2\"}");
        final Path fromEnv = file("env.json", "{\"server\": \"http://env:3\"}");
        final Path fromFlag = file("flag.json", "{\"server\": \"http://flag:4\"}");
        assertThat(options().serverUrl()).isEqualTo("http://home:1");
        env.put("XDG_CONFIG_HOME", tmp.resolve("xdg").toString());
        assertThat(options().serverUrl()).isEqualTo("http://xdg:2");
        env.put("NBDTAIL_CLI_CONFIG", fromEnv.toString());
        assertThat(options().serverUrl()).isEqualTo("http://env:3");
        assertThat(options().flags(null, null, null, fromFlag).serverUrl()).isEqualTo("http://flag:4");
    }

    @Test
    void shouldTakeTheTokenFromFlagsThenEnvironmentThenConfigThenDefault() throws Exception {
        final Path configToken = file("conf/token", "from-config\n");
        final Path config = file("conf/cli.json", "{\"tokenFile\": \"token\"}");
        final Path envToken = file("env-token", "from-env-file\n");
        final Path flagToken = file("flag-token", "\n  from-flag-file  \nsecond line\n");

        assertThatThrownBy(() -> options().token()).hasMessageStartingWith("no API token: pass --token-file or set"
            + " NBDTAIL_TOKEN_FILE (the server writes DATA/api-token on first start); /var/lib/nbdtail/api-token");

        // A relative tokenFile is relative to the config file.
        assertThat(options().flags(null, null, null, config).token()).isEqualTo("from-config");
        env.put("NBDTAIL_TOKEN_FILE", envToken.toString());
        assertThat(options().flags(null, null, null, config).token()).isEqualTo("from-env-file");
        env.put("NBDTAIL_TOKEN", "from-env");
        assertThat(options().flags(null, null, null, config).token()).isEqualTo("from-env");
        assertThat(options().flags(null, null, flagToken, config).token()).isEqualTo("from-flag-file");
        assertThat(options().flags(null, "from-flag", flagToken, config).token()).isEqualTo("from-flag");
    }

    @Test
    void shouldExpandTheHomeDirectoryInTheConfigsTokenFile() throws Exception {
        file("home/secret/token", "t0k3n");
        final Path config = file("cli.json", "{\"tokenFile\": \"~/secret/token\"}");
        assertThat(options().flags(null, null, null, config).token()).isEqualTo("t0k3n");
    }

    @Test
    void shouldRefuseAnEmptyTokenFile() throws Exception {
        final Path empty = file("empty", "\n\n");
        assertThatThrownBy(() -> options().flags(null, null, empty, null).token())
            .hasMessage("the API token file " + empty + " (--token-file) is empty; pass --token-file or set"
                + " NBDTAIL_TOKEN_FILE (the server writes DATA/api-token on first start)");
    }

    @Test
    void shouldAcceptHostAndPortAndRefuseOtherSchemes() {
        assertThat(ServerOptions.normalise("10.0.0.5:10810", "--server")).isEqualTo("http://10.0.0.5:10810");
        assertThat(ServerOptions.normalise(" https://tail1.example:10810/ ", "--server"))
            .isEqualTo("https://tail1.example:10810");
        assertThatThrownBy(() -> ServerOptions.normalise("ftp://x:1", "$NBDTAIL_SERVER"))
            .isInstanceOf(IllegalArgumentException.class)
            .hasMessage("invalid server URL 'ftp://x:1' (from $NBDTAIL_SERVER): use http://HOST:PORT or"
                + " https://HOST:PORT, e.g. http://127.0.0.1:10810");
        assertThatThrownBy(() -> ServerOptions.normalise("http://", "--server"))
            .isInstanceOf(IllegalArgumentException.class);
    }

    @Test
    void shouldRejectAConfigThatIsNotAnObjectOfStrings() throws Exception {
        final Path array = file("a.json", "[]");
        final Path number = file("b.json", "{\"server\": 10810}");
        final Path broken = file("c.json", "{\"server\": ");
        assertThatThrownBy(() -> options().flags(null, null, null, array).serverUrl())
            .hasMessageContaining("must hold a JSON object");
        assertThatThrownBy(() -> options().flags(null, null, null, number).serverUrl())
            .hasMessage("'server' in the CLI config file " + number + " must be a non-empty string");
        assertThatThrownBy(() -> options().flags(null, null, null, broken).serverUrl())
            .hasMessageStartingWith("CLI config file " + broken + " is not valid JSON");
    }

    @Test
    void shouldGoOnlineWithoutADataDirectoryOrWithAServerFlag() {
        assertThat(options().online(false)).isTrue();
        assertThat(options().online(true)).isFalse();
        // $NBDTAIL_DATA_DIR set (no --data-dir flag, so no parse result to object to) and --server given.
        assertThat(options().flags("http://flag:3", null, null, null).online(true)).isTrue();
    }
}
