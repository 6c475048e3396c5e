package io.nbdtail.api;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

/**
 * The {@code api} section of the server configuration.
 *
 * <pre>
 * "api": {
 *   "listen": "127.0.0.1:10810",       // "off" disables the API
 *   "tokenFile": "/var/lib/nbdtail/api-token",
 *   "aclDefault": "allow",             // policy for volumes without an access list: allow or deny
 *   "tls": { "keystore": "/etc/nbdtail/api.p12", "passwordFile": "/etc/nbdtail/api.p12.pass" }
 * }
 * </pre>
 */
@JsonIgnoreProperties(ignoreUnknown = false)
public final class ApiConfig {
    public String listen = "127.0.0.1:10810";
    /** Default: {@code api-token} in the data directory. */
    public String tokenFile;
    public String aclDefault = "allow";
    public Tls tls;

    /** Optional TLS for the API listener, from a PKCS#12 keystore. */
    @JsonIgnoreProperties(ignoreUnknown = false)
    public static final class Tls {
        public String keystore;
        /** The keystore password, or read it from {@link #passwordFile} (preferred: keeps it out of the config). */
        public String password;
        public String passwordFile;
    }

    public boolean enabled() {
        return listen != null && !listen.equalsIgnoreCase("off");
    }

    public boolean defaultAllow() {
        return switch (aclDefault == null ? "allow" : aclDefault) {
            case "allow" -> true;
            case "deny" -> false;
            default -> throw new IllegalArgumentException("invalid api.aclDefault '" + aclDefault + "': use allow or"
                + " deny");
        };
    }
}
