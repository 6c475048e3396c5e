package io.nbdtail.nbd.tls;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;

/**
 * The {@code tls} part of the {@code mirror} configuration section: how this tail, as the source of a mirror,
 * talks to the destination's NBD listener. With {@code required}, every connection of a mirror (its data
 * connection and the hello, commit and resolve requests) starts with NBD_OPT_STARTTLS and never falls back to
 * plaintext.
 *
 * <pre>
 * "tls": {
 *   "mode": "required",                     // off | required
 *   "certificates": "/etc/nbdtail/tls",     // ca-cert.pem, client-cert.pem, client-key.pem (as qemu's client)
 *   "pskFile": null,                        // or: identity:hexkey lines, as psktool writes them
 *   "pskIdentity": null                     // the line to use; default: the file's only line
 * }
 * </pre>
 * See docs/security.md.
 */
@JsonIgnoreProperties(ignoreUnknown = false)
public final class ClientTlsConfig {
    /** {@code off}: plaintext. {@code required}: STARTTLS first; a destination without TLS is refused. */
    public String mode = "off";
    /**
     * A directory in qemu's layout: {@code ca-cert.pem} (the CA that signs destination tails' server
     * certificates), {@code client-cert.pem} and {@code client-key.pem} (this tail's certificate, which the
     * destination verifies and may name in its {@code receive}).
     */
    public String certificates;
    /** A PSK file: {@code identity:hexkey} lines. */
    public String pskFile;
    /** Which identity of {@link #pskFile} to present; may be left out when the file has one line. */
    public String pskIdentity;

    /** Whether TLS is on; {@code false} for {@code off}. */
    public boolean required() {
        return switch (mode == null ? "off" : mode) {
            case "off" -> false;
            case "required" -> true;
            default -> throw new IllegalArgumentException("invalid mirror.tls.mode '" + mode + "': use off or required"
                + " (a source never uses TLS only when it can: that would let a man in the middle strip it)");
        };
    }
}
