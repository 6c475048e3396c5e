package io.nbdtail.nbd.tls;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The {@code tls} part of the {@code nbd} configuration section: NBD_OPT_STARTTLS with X.509 certificates or with
 * pre-shared keys, and which client identities may open which volume.
 *
 * <pre>
 * "tls": {
 *   "mode": "required",                          // off | optional | required
 *   "certificates": "/etc/nbdtail/tls",          // ca-cert.pem, server-cert.pem, server-key.pem (as qemu-nbd)
 *   "verifyClients": true,                       // clients need a certificate signed by ca-cert.pem
 *   "pskFile": null,                             // or: identity:hexkey lines, as qemu and nbdkit read them
 *   "authorization": { "vm-17-root": ["dn:CN=host-4.example.net,O=Tenant A", "psk:host-4"] },
 *   "unlistedVolumes": "allow"                   // volumes not in authorization: allow (any TLS client) or deny
 * }
 * </pre>
 * See docs/security.md.
 */
@JsonIgnoreProperties(ignoreUnknown = false)
public final class TlsConfig {
    /**
     * {@code off}: STARTTLS is refused with ERR_POLICY. {@code optional}: clients may use TLS; volumes with an
     * authorization entry are invisible to clients without it. {@code required}: every option except STARTTLS and
     * ABORT is answered ERR_TLS_REQD until TLS is up, and a plaintext EXPORT_NAME closes the connection.
     */
    public String mode = "off";
    /** A directory in the layout qemu-nbd and nbdkit use: ca-cert.pem, server-cert.pem, server-key.pem. */
    public String certificates;
    /** With certificates: require a client certificate signed by {@code ca-cert.pem}. */
    public boolean verifyClients = true;
    /** A PSK file: one {@code identity:hexkey} per line (what {@code psktool} writes). */
    public String pskFile;
    /**
     * Volume name to the identities that may open it: {@code dn:} and a certificate subject (compared as an
     * X.500 name, not as a string), or {@code psk:} and a PSK identity.
     */
    public Map<String, List<String>> authorization = new LinkedHashMap<>();
    /** Volumes without an authorization entry: {@code allow} any client that passed TLS, or {@code deny}. */
    public String unlistedVolumes = "allow";

    /** The modes, parsed. */
    public enum Mode {
        OFF, OPTIONAL, REQUIRED
    }

    public Mode parsedMode() {
        return switch (mode == null ? "off" : mode) {
            case "off" -> Mode.OFF;
            case "optional" -> Mode.OPTIONAL;
            case "required" -> Mode.REQUIRED;
            default -> throw new IllegalArgumentException("invalid nbd.tls.mode '" + mode + "': use off, optional or"
                + " required");
        };
    }
}
