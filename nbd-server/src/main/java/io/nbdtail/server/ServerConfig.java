package io.nbdtail.server;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.nbdtail.replication.MirrorConfig;
import io.nbdtail.api.ApiConfig;
import io.nbdtail.nbd.engine.NbdServerConfig;
import io.nbdtail.nbd.tls.ClientTlsConfig;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The daemon's configuration file (JSON). Every key is optional; command-line flags override the file.
 *
 * <pre>
 * {
 *   "listen": "127.0.0.1:10809",
 *   "nbd": { "maxConnections": 1024, "handshakeTimeoutMillis": 10000, ... },
 *   "api": { "listen": "127.0.0.1:10810", "tokenFile": "...", "aclDefault": "allow", "tls": { ... } },
 *   "mirror": { "maxInFlight": 16, "convergeMillis": 500, "requestTimeoutMillis": 60000, ...,
 *               "tls": { "mode": "required", "certificates": "/etc/nbdtail/tls" } }
 * }
 * </pre>
 * The {@code nbd} keys are the fields of {@link NbdServerConfig}, the {@code api} keys those of {@link ApiConfig}. Unknown keys are an error, so that a typo
 * does not silently leave a limit at its default.
 */
@JsonIgnoreProperties(ignoreUnknown = false)
public final class ServerConfig {
    /** The NBD listener, {@code HOST:PORT} or {@code [IPv6]:PORT}; 10809 is the IANA NBD port. */
    public String listen = "127.0.0.1:10809";
    public NbdServerConfig nbd = new NbdServerConfig();
    public ApiConfig api = new ApiConfig();
    /** Defaults of live mirrors started on this server (the fields of {@link MirrorConfig}, and {@code tls}). */
    public Mirror mirror = new Mirror();

    /** The {@code mirror} section: the mirror's tuning and how this tail connects to destinations. */
    @JsonIgnoreProperties(ignoreUnknown = false)
    public static final class Mirror extends MirrorConfig {
        /** TLS of this tail's connections to a destination tail, as the source of a mirror. */
        public ClientTlsConfig tls = new ClientTlsConfig();
    }

    public static ServerConfig load(final Path file) throws IOException {
        final ObjectMapper mapper = new ObjectMapper().enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES);
        try {
            final ServerConfig config = mapper.readValue(Files.readAllBytes(file), ServerConfig.class);
            if (config.nbd == null) {
                config.nbd = new NbdServerConfig();
            }
            if (config.api == null) {
                config.api = new ApiConfig();
            }
            if (config.mirror == null) {
                config.mirror = new Mirror();
            }
            return config;
        } catch (final IOException e) {
            throw new IOException("cannot read configuration file " + file + ": " + e.getMessage(), e);
        }
    }

    /** Parses {@code HOST:PORT} or {@code [V6]:PORT}; the port must be 0..65535. */
    public static HostPort parseListen(final String listen) {
        final int colon = listen.lastIndexOf(':');
        if (colon <= 0 || colon == listen.length() - 1) {
            throw new IllegalArgumentException("invalid listen address '" + listen + "': use HOST:PORT, for example"
                + " 127.0.0.1:10809 or [::1]:10809");
        }
        String host = listen.substring(0, colon);
        if (host.startsWith("[") && host.endsWith("]")) {
            host = host.substring(1, host.length() - 1);
        }
        final int port;
        try {
            port = Integer.parseInt(listen.substring(colon + 1));
        } catch (final NumberFormatException e) {
            throw new IllegalArgumentException("invalid port in listen address '" + listen + "'");
        }
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException("port out of range in listen address '" + listen + "'");
        }
        return new HostPort(host, port);
    }

    /** A parsed listen address. */
    public record HostPort(String host, int port) {
    }
}
