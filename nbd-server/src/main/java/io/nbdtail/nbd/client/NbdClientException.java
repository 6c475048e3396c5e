package io.nbdtail.nbd.client;

import java.io.IOException;

/**
 * An NBD request or handshake failed. {@link #errno()} is the NBD error value the server sent (EIO = 5,
 * ENOSPC = 28, ...), or 0 when the connection itself failed (refused, closed, timed out, protocol violation).
 * {@link #optionReply()} is the option error type when the handshake was refused.
 */
public final class NbdClientException extends IOException {
    private final int errno;
    private final int optionReply;
    private final boolean tlsRefused;

    public NbdClientException(final String message) {
        this(message, 0, 0, null);
    }

    public NbdClientException(final String message, final Throwable cause) {
        this(message, 0, 0, cause);
    }

    public NbdClientException(final String message, final int errno, final int optionReply, final Throwable cause) {
        super(message, cause);
        this.errno = errno;
        this.optionReply = optionReply;
        this.tlsRefused = false;
    }

    /** @param tlsRefused the TLS handshake failed: a certificate or key was not accepted by one side. */
    public NbdClientException(final String message, final Throwable cause, final boolean tlsRefused) {
        super(message, cause);
        this.errno = 0;
        this.optionReply = 0;
        this.tlsRefused = tlsRefused;
    }

    /** The NBD error value of a refused request; 0 if the connection failed instead. */
    public int errno() {
        return errno;
    }

    /** The option reply type (bit 31 set) of a refused option; 0 if not an option refusal. */
    public int optionReply() {
        return optionReply;
    }

    /** Whether the TLS handshake failed (an untrusted or wrong certificate, an unknown PSK identity or key). */
    public boolean tlsRefused() {
        return tlsRefused;
    }

    /** Whether the server answered (a refusal is final), rather than the connection failing (worth a retry). */
    public boolean answered() {
        return errno != 0 || optionReply != 0 || tlsRefused;
    }
}
