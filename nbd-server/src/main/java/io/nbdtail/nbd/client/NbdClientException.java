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
    }

    /** The NBD error value of a refused request; 0 if the connection failed instead. */
    public int errno() {
        return errno;
    }

    /** The option reply type (bit 31 set) of a refused option; 0 if not an option refusal. */
    public int optionReply() {
        return optionReply;
    }

    /** Whether the server answered (a refusal is final), rather than the connection failing (worth a retry). */
    public boolean answered() {
        return errno != 0 || optionReply != 0;
    }
}
